/**
 * Tensor-name patterns: `*` matches any run of characters (dots included,
 * so `*.c_attn.weight` matches `h.0.attn.c_attn.weight`), `?` one character.
 *
 * @module
 */

/**
 * Compiles a glob into an anchored regular expression.
 *
 * @param pattern A glob such as `h.*.mlp.*.weight`.
 * @returns A RegExp matching whole names.
 */
export function globToRegExp(pattern: string): RegExp {
  let source = "";
  for (const ch of pattern) {
    if (ch === "*") source += ".*";
    else if (ch === "?") source += ".";
    else source += ch.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${source}$`, "s");
}
