// A worker module that cannot load (tests/parallel_file_job_test.ts).
throw new Error("this worker cannot start");
