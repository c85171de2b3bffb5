// A worker that claims a task, then crashes in the middle of it (tests/parallel_file_job_test.ts).
import { SharedJobState } from "../streams/_tensor_tasks.ts";
import type { TensorTasksMessage } from "../streams/_tensor_task_worker.ts";

(globalThis as unknown as { onmessage: (event: MessageEvent<TensorTasksMessage>) => void }).onmessage = (
  { data },
) => {
  new SharedJobState(data.shared).claim(data.job.tasks.length);
  throw new Error("crashed in the middle of a task");
};
