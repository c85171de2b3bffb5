;; Exact WebAssembly SIMD kernels for quantflow (SPEC.md Sections 1, 3, 5).
;;
;; Every kernel reproduces the JavaScript core bit for bit (src/quantize_kernel.ts,
;; src/block_range.ts, src/float16.ts, src/pack.ts); see src/wasm_kernels.ts for
;; the proofs. All pointers are byte addresses in the exported memory; the
;; caller (src/wasm_kernels.ts) owns the layout. Bytes 0-127 are scratch: the
;; current block's scale splat four times (0-63) and its bias splat four
;; times (64-127), so that one loop serves single-block runs (pointers fixed)
;; and per-column blocks (pointers advancing 64 bytes per 16 elements).
;;
;; Quantizing one value x with scale s and zero point zp, bias = 0x4B400000 - zp:
;;   v = x / s                      correctly rounded float32 division
;;   (float16 arithmetic: v rounded to 11 significant bits, ties to even)
;;   v = max(v, -2^22)              keeps v + 1.5*2^23 positive
;;   q = bits(v + 1.5*2^23) - bias  = round_half_even(v) + zp for |v| < 2^22,
;;                                    monotone (so clips alike) beyond
;;   q = clip(q, qmin, qmax); NaN -> 0 (what a typed array stores for NaN)
;;
;; The quantize exports return 1 when float16 arithmetic met a value with more
;; than 11 significant bits: the double rounding float32 -> float16 is only
;; proven exact for float16 inputs, so the caller then redoes the work in
;; JavaScript. Bytes past n are never written.
(module
  (memory (export "memory") 1)

  ;; Writes the scale at $sp and the bias at $bp into the scratch splats.
  (func $splat (param $sp i32) (param $bp i32)
    (local $s v128) (local $b v128)
    (local.set $s (v128.load32_splat (local.get $sp)))
    (local.set $b (v128.load32_splat (local.get $bp)))
    (v128.store offset=0 (i32.const 0) (local.get $s))
    (v128.store offset=16 (i32.const 0) (local.get $s))
    (v128.store offset=32 (i32.const 0) (local.get $s))
    (v128.store offset=48 (i32.const 0) (local.get $s))
    (v128.store offset=64 (i32.const 0) (local.get $b))
    (v128.store offset=80 (i32.const 0) (local.get $b))
    (v128.store offset=96 (i32.const 0) (local.get $b))
    (v128.store offset=112 (i32.const 0) (local.get $b)))

  ;; Quantizes $n float32 values at $in to bytes at $out; scales at $sp and
  ;; biases at $bp, advancing $adv bytes per 16 elements (0 or 64).
  (func $span_f32 (param $in i32) (param $out i32) (param $n i32) (param $sp i32) (param $bp i32)
                  (param $adv i32) (param $lo i32) (param $hi i32)
    (local $x v128) (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128)
    (local $vlo v128) (local $vhi v128) (local $L v128) (local $M v128) (local $ff v128)
    (local $xs f32) (local $v f32) (local $q i32) (local $sadv i32)
    (local.set $vlo (i32x4.splat (local.get $lo)))
    (local.set $vhi (i32x4.splat (local.get $hi)))
    (local.set $L (f32x4.splat (f32.const -4194304)))
    (local.set $M (f32x4.splat (f32.const 12582912)))
    (local.set $ff (i16x8.splat (i32.const 255)))
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $n) (i32.const 16)))
        (local.set $q0
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (f32x4.div (local.tee $x (v128.load offset=0 (local.get $in))) (v128.load offset=0 (local.get $sp)))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=0 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $q1
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (f32x4.div (local.tee $x (v128.load offset=16 (local.get $in))) (v128.load offset=16 (local.get $sp)))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=16 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $q2
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (f32x4.div (local.tee $x (v128.load offset=32 (local.get $in))) (v128.load offset=32 (local.get $sp)))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=32 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $q3
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (f32x4.div (local.tee $x (v128.load offset=48 (local.get $in))) (v128.load offset=48 (local.get $sp)))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=48 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (v128.store (local.get $out)
          (i8x16.narrow_i16x8_u
            (v128.and (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)) (local.get $ff))
            (v128.and (i16x8.narrow_i32x4_s (local.get $q2) (local.get $q3)) (local.get $ff))))
        (local.set $in (i32.add (local.get $in) (i32.const 64)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (local.set $sp (i32.add (local.get $sp) (local.get $adv)))
        (local.set $bp (i32.add (local.get $bp) (local.get $adv)))
        (local.set $n (i32.sub (local.get $n) (i32.const 16)))
        (br $vec)))
    ;; Scalar tail, the same operations one lane at a time.
    (local.set $sadv (i32.shr_u (local.get $adv) (i32.const 4)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $n)))
        (local.set $xs (f32.load (local.get $in)))
        (local.set $v (f32.div (local.get $xs) (f32.load (local.get $sp))))
        (local.set $v (select (f32.const -4194304) (local.get $v) (f32.lt (local.get $v) (f32.const -4194304))))
        (local.set $q (i32.sub (i32.reinterpret_f32 (f32.add (local.get $v) (f32.const 12582912))) (i32.load (local.get $bp))))
        (local.set $q (select (local.get $lo) (local.get $q) (i32.lt_s (local.get $q) (local.get $lo))))
        (local.set $q (select (local.get $hi) (local.get $q) (i32.gt_s (local.get $q) (local.get $hi))))
        (i32.store8 (local.get $out) (select (local.get $q) (i32.const 0) (f32.eq (local.get $xs) (local.get $xs))))
        (local.set $in (i32.add (local.get $in) (i32.const 4)))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (local.set $sp (i32.add (local.get $sp) (local.get $sadv)))
        (local.set $bp (i32.add (local.get $bp) (local.get $sadv)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $tail))))

  ;; As $span_f32, with the quotient rounded to float16's 11 significant bits
  ;; (ties to even) by integer arithmetic on its bits: add 0xFFF plus the
  ;; lowest kept bit, clear the 13 dropped bits.
  (func $span_f16 (param $in i32) (param $out i32) (param $n i32) (param $sp i32) (param $bp i32)
                  (param $adv i32) (param $lo i32) (param $hi i32) (result i32)
    (local $x v128) (local $v v128) (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128)
    (local $vlo v128) (local $vhi v128) (local $L v128) (local $M v128) (local $ff v128)
    (local $one v128) (local $fff v128) (local $keep v128)
    (local $xs f32) (local $vs f32) (local $bits i32) (local $q i32) (local $sadv i32)
    (local $chk v128) (local $schk i32)
    (local.set $vlo (i32x4.splat (local.get $lo)))
    (local.set $vhi (i32x4.splat (local.get $hi)))
    (local.set $L (f32x4.splat (f32.const -4194304)))
    (local.set $M (f32x4.splat (f32.const 12582912)))
    (local.set $ff (i16x8.splat (i32.const 255)))
    (local.set $one (i32x4.splat (i32.const 1)))
    (local.set $fff (i32x4.splat (i32.const 0xfff)))
    (local.set $keep (i32x4.splat (i32.const 0xffffe000)))
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $n) (i32.const 16)))
        (local.set $q0
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (v128.and
                        (i32x4.add
                          (i32x4.add
                            (local.tee $v (f32x4.div (local.tee $x (v128.load offset=0 (local.get $in))) (v128.load offset=0 (local.get $sp))))
                            (v128.and (i32x4.shr_u (local.get $v) (i32.const 13)) (local.get $one)))
                          (local.get $fff))
                        (local.get $keep))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=0 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $chk (v128.or (local.get $chk) (local.get $x)))
        (local.set $q1
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (v128.and
                        (i32x4.add
                          (i32x4.add
                            (local.tee $v (f32x4.div (local.tee $x (v128.load offset=16 (local.get $in))) (v128.load offset=16 (local.get $sp))))
                            (v128.and (i32x4.shr_u (local.get $v) (i32.const 13)) (local.get $one)))
                          (local.get $fff))
                        (local.get $keep))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=16 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $chk (v128.or (local.get $chk) (local.get $x)))
        (local.set $q2
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (v128.and
                        (i32x4.add
                          (i32x4.add
                            (local.tee $v (f32x4.div (local.tee $x (v128.load offset=32 (local.get $in))) (v128.load offset=32 (local.get $sp))))
                            (v128.and (i32x4.shr_u (local.get $v) (i32.const 13)) (local.get $one)))
                          (local.get $fff))
                        (local.get $keep))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=32 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $chk (v128.or (local.get $chk) (local.get $x)))
        (local.set $q3
          (v128.and
            (i32x4.min_s
              (i32x4.max_s
                (i32x4.sub
                  (f32x4.add
                    (f32x4.pmax
                      (v128.and
                        (i32x4.add
                          (i32x4.add
                            (local.tee $v (f32x4.div (local.tee $x (v128.load offset=48 (local.get $in))) (v128.load offset=48 (local.get $sp))))
                            (v128.and (i32x4.shr_u (local.get $v) (i32.const 13)) (local.get $one)))
                          (local.get $fff))
                        (local.get $keep))
                      (local.get $L))
                    (local.get $M))
                  (v128.load offset=48 (local.get $bp)))
                (local.get $vlo))
              (local.get $vhi))
            (f32x4.eq (local.get $x) (local.get $x))))
        (local.set $chk (v128.or (local.get $chk) (local.get $x)))
        (v128.store (local.get $out)
          (i8x16.narrow_i16x8_u
            (v128.and (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)) (local.get $ff))
            (v128.and (i16x8.narrow_i32x4_s (local.get $q2) (local.get $q3)) (local.get $ff))))
        (local.set $in (i32.add (local.get $in) (i32.const 64)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (local.set $sp (i32.add (local.get $sp) (local.get $adv)))
        (local.set $bp (i32.add (local.get $bp) (local.get $adv)))
        (local.set $n (i32.sub (local.get $n) (i32.const 16)))
        (br $vec)))
    (local.set $sadv (i32.shr_u (local.get $adv) (i32.const 4)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $n)))
        (local.set $xs (f32.load (local.get $in)))
        (local.set $schk (i32.or (local.get $schk) (i32.reinterpret_f32 (local.get $xs))))
        (local.set $bits (i32.reinterpret_f32 (f32.div (local.get $xs) (f32.load (local.get $sp)))))
        (local.set $vs (f32.reinterpret_i32
          (i32.and
            (i32.add (i32.add (local.get $bits) (i32.and (i32.shr_u (local.get $bits) (i32.const 13)) (i32.const 1))) (i32.const 0xfff))
            (i32.const 0xffffe000))))
        (local.set $vs (select (f32.const -4194304) (local.get $vs) (f32.lt (local.get $vs) (f32.const -4194304))))
        (local.set $q (i32.sub (i32.reinterpret_f32 (f32.add (local.get $vs) (f32.const 12582912))) (i32.load (local.get $bp))))
        (local.set $q (select (local.get $lo) (local.get $q) (i32.lt_s (local.get $q) (local.get $lo))))
        (local.set $q (select (local.get $hi) (local.get $q) (i32.gt_s (local.get $q) (local.get $hi))))
        (i32.store8 (local.get $out) (select (local.get $q) (i32.const 0) (f32.eq (local.get $xs) (local.get $xs))))
        (local.set $in (i32.add (local.get $in) (i32.const 4)))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (local.set $sp (i32.add (local.get $sp) (local.get $sadv)))
        (local.set $bp (i32.add (local.get $bp) (local.get $sadv)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $tail)))
    ;; 1 when a value had more than 11 significant bits (not a float16 value).
    (i32.ne (i32.const 0) (i32.and (i32.const 0x1fff)
      (i32.or (local.get $schk)
        (i32.or (i32.or (i32x4.extract_lane 0 (local.get $chk)) (i32x4.extract_lane 1 (local.get $chk)))
                (i32.or (i32x4.extract_lane 2 (local.get $chk)) (i32x4.extract_lane 3 (local.get $chk))))))))

  (func $span (param $in i32) (param $out i32) (param $n i32) (param $sp i32) (param $bp i32)
              (param $adv i32) (param $lo i32) (param $hi i32) (param $f16 i32) (result i32)
    (if (result i32) (local.get $f16)
      (then (call $span_f16 (local.get $in) (local.get $out) (local.get $n) (local.get $sp) (local.get $bp)
                            (local.get $adv) (local.get $lo) (local.get $hi)))
      (else (call $span_f32 (local.get $in) (local.get $out) (local.get $n) (local.get $sp) (local.get $bp)
                            (local.get $adv) (local.get $lo) (local.get $hi))
            (i32.const 0))))

  ;; One block: $n values, scale $s, bias $b (= 0x4B400000 - zero point).
  (func (export "quantize_run") (param $in i32) (param $out i32) (param $n i32) (param $s f32) (param $b i32)
                                (param $lo i32) (param $hi i32) (param $f16 i32) (result i32)
    (f32.store (i32.const 128) (local.get $s))
    (i32.store (i32.const 132) (local.get $b))
    (call $splat (i32.const 128) (i32.const 132))
    (call $span (local.get $in) (local.get $out) (local.get $n) (i32.const 0) (i32.const 64) (i32.const 0)
                (local.get $lo) (local.get $hi) (local.get $f16)))

  ;; A contiguous layout: runs of $run elements per block, the first run
  ;; $first long; scales and biases of the first block at $sp and $bp.
  (func (export "quantize_contig") (param $in i32) (param $out i32) (param $n i32) (param $first i32) (param $run i32)
                                   (param $sp i32) (param $bp i32) (param $lo i32) (param $hi i32) (param $f16 i32)
                                   (result i32)
    (local $len i32) (local $bad i32)
    (local.set $len (local.get $first))
    (block $done
      (loop $runs
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (if (i32.gt_u (local.get $len) (local.get $n)) (then (local.set $len (local.get $n))))
        (call $splat (local.get $sp) (local.get $bp))
        (local.set $bad (i32.or (local.get $bad)
          (call $span (local.get $in) (local.get $out) (local.get $len) (i32.const 0) (i32.const 64) (i32.const 0)
                      (local.get $lo) (local.get $hi) (local.get $f16))))
        (local.set $in (i32.add (local.get $in) (i32.shl (local.get $len) (i32.const 2))))
        (local.set $out (i32.add (local.get $out) (local.get $len)))
        (local.set $n (i32.sub (local.get $n) (local.get $len)))
        (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
        (local.set $bp (i32.add (local.get $bp) (i32.const 4)))
        (local.set $len (local.get $run))
        (br $runs)))
    (local.get $bad))

  ;; As quantize_contig in float32 arithmetic, adding the report's error sums
  ;; to the three float64 at $acc (as error_contig) while each value and its
  ;; quantized integer are still in registers. error_contig's float64
  ;; arithmetic on every element costs twice the quantizing (conversions and
  ;; additions saturate the float pipes); here the error is computed in
  ;; float32, exactly, and the loop is bound by its arithmetic, so it spends
  ;; as few operations per element as it can. It clips in float: with
  ;; f = x / s + 1.5*2^23 (rounding v = x / s to an integer, ties to even,
  ;; for |v| < 2^22, and monotone beyond), f clipped to the integers of
  ;; [1.5*2^23 + qmin - zp, 1.5*2^23 + qmax - zp] gives both q = bits(f) - bias
  ;; and k = q - zp = f - 1.5*2^23 exactly, for any x but NaN (infinities
  ;; clip). A NaN (the only value whose square makes the sums NaN) must give
  ;; 0, as a typed array stores it, so a run whose sums turn NaN is quantized
  ;; again as quantize_contig does. The error:
  ;;   e = (x - sh*k) - sl*k    k = q - zp
  ;; with s = sh + sl split into two halves of 12 significant bits. |k| <= 255
  ;; (8 bits; zp in [qmin, qmax], as computeBlockParams clamps it), so both
  ;; products are exact. When |e| < 0.75 s, both subtractions are exact too:
  ;; - x in the binade of s or above: x, sh*k and e are multiples of ulp(s),
  ;;   and |x - sh*k| <= |e| + |sl*k| < 0.75 s + 2^-3 s fits in 24 bits of it;
  ;; - x in a smaller binade (|x| < s): rounding gives k = 0 (e = x), or
  ;;   k = +-1 with |x| >= s/2 (clipping never forces k != 0, zp being in
  ;;   range), so x is in the binade just below s and e = x - s*k fits in 24
  ;;   bits of ulp(x).
  ;; So max |e| is exact. The squares are summed in float32 over up to 32
  ;; elements (8 per lane: 8 roundings, relative error under 8 * 2^-24), then
  ;; in float64: relative error under 1e-6. Returns 1, the
  ;; sums then unreliable, when a run may have broken those conditions: some
  ;; |e| >= 0.625 s (a clip far beyond the range; the margin covers a rounded
  ;; e), a scale outside [2^-40, 2^40] (float32 squares could overflow), or a
  ;; largest |e| under 2^-40 but not 0 (squares under 2^-126 lose bits: with
  ;; every |e| that small they could be all there is; otherwise some k != 0
  ;; makes the sums at least 2^-82 and what is lost negligible). The caller
  ;; then redoes the sums with error_contig.
  (func (export "quantize_contig_err") (param $in i32) (param $out i32) (param $n i32) (param $first i32)
                                       (param $run i32) (param $sp i32) (param $bp i32) (param $lo i32) (param $hi i32)
                                       (param $acc i32) (result i32)
    (local $len i32) (local $left i32) (local $j i32) (local $in0 i32) (local $out0 i32) (local $bad i32) (local $sf f32) (local $shf f32) (local $m f32)
    (local $si v128) (local $b v128) (local $sh v128) (local $sl v128) (local $lof v128) (local $hif v128)
    (local $M v128) (local $ff v128)
    (local $x v128) (local $f v128) (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128)
    (local $k v128) (local $e v128) (local $te v128) (local $tw v128)
    (local $sig v128) (local $err v128) (local $mxr v128) (local $mx v128)
    (local $xs f32) (local $v f32) (local $qs i32) (local $ss f64) (local $zs i32) (local $w f64) (local $ed f64)
    (local $sig1 f64) (local $err1 f64) (local $mx1 f64)
    (local.set $M (f32x4.splat (f32.const 12582912)))
    (local.set $ff (i16x8.splat (i32.const 255)))
    (local.set $len (local.get $first))
    (block $done
      (loop $runs
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (if (i32.gt_u (local.get $len) (local.get $n)) (then (local.set $len (local.get $n))))
        (local.set $sf (f32.load (local.get $sp)))
        (local.set $si (f32x4.splat (local.get $sf)))
        (local.set $b (v128.load32_splat (local.get $bp)))
        ;; zp = 0x4B400000 - bias; q in [lo, hi] is f in [1.5*2^23 + lo - zp, 1.5*2^23 + hi - zp].
        (local.set $zs (i32.sub (i32.const 0x4B400000) (i32.load (local.get $bp))))
        (local.set $lof (f32x4.splat (f32.convert_i32_s (i32.add (i32.const 12582912) (i32.sub (local.get $lo) (local.get $zs))))))
        (local.set $hif (f32x4.splat (f32.convert_i32_s (i32.add (i32.const 12582912) (i32.sub (local.get $hi) (local.get $zs))))))
        (local.set $shf (f32.reinterpret_i32 (i32.and (i32.reinterpret_f32 (local.get $sf)) (i32.const 0xFFFFF000))))
        (local.set $sh (f32x4.splat (local.get $shf)))
        (local.set $sl (f32x4.splat (f32.sub (local.get $sf) (local.get $shf))))
        (local.set $ss (f64.promote_f32 (local.get $sf)))
        (if (i32.eqz (i32.and (f32.ge (local.get $sf) (f32.const 0x1p-40)) (f32.le (local.get $sf) (f32.const 0x1p40))))
          (then (local.set $bad (i32.const 1))))
        (local.set $mxr (v128.const i32x4 0 0 0 0))
        (local.set $left (local.get $len))
        (local.set $in0 (local.get $in))
        (local.set $out0 (local.get $out))
        (block $vdone
          (loop $vec
            (br_if $vdone (i32.lt_u (local.get $left) (i32.const 16)))
            ;; Up to 32 elements, four vectors at a time, quantized and clipped
            ;; in float (above); their squares summed in float32 (8 per lane),
            ;; then in float64.
            (local.set $te (v128.const i32x4 0 0 0 0))
            (local.set $tw (v128.const i32x4 0 0 0 0))
            (local.set $j (i32.const 2))
            (loop $groups
            (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (local.tee $x (v128.load offset=0 (local.get $in))) (local.get $si)) (local.get $M)))))
            (local.set $q0 (i32x4.sub (local.get $f) (local.get $b)))
            (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
            (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                     (f32x4.mul (local.get $sl) (local.get $k))))
            (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
            (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
            (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
            (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (local.tee $x (v128.load offset=16 (local.get $in))) (local.get $si)) (local.get $M)))))
            (local.set $q1 (i32x4.sub (local.get $f) (local.get $b)))
            (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
            (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                     (f32x4.mul (local.get $sl) (local.get $k))))
            (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
            (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
            (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
            (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (local.tee $x (v128.load offset=32 (local.get $in))) (local.get $si)) (local.get $M)))))
            (local.set $q2 (i32x4.sub (local.get $f) (local.get $b)))
            (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
            (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                     (f32x4.mul (local.get $sl) (local.get $k))))
            (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
            (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
            (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
            (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (local.tee $x (v128.load offset=48 (local.get $in))) (local.get $si)) (local.get $M)))))
            (local.set $q3 (i32x4.sub (local.get $f) (local.get $b)))
            (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
            (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                     (f32x4.mul (local.get $sl) (local.get $k))))
            (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
            (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
            (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
            (v128.store (local.get $out)
              (i8x16.narrow_i16x8_u
                (v128.and (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)) (local.get $ff))
                (v128.and (i16x8.narrow_i32x4_s (local.get $q2) (local.get $q3)) (local.get $ff))))
            (local.set $in (i32.add (local.get $in) (i32.const 64)))
            (local.set $out (i32.add (local.get $out) (i32.const 16)))
            (local.set $left (i32.sub (local.get $left) (i32.const 16)))
            (br_if $groups (i32.and (local.tee $j (i32.sub (local.get $j) (i32.const 1)))
                                    (i32.ge_u (local.get $left) (i32.const 16)))))
            (local.set $err (f64x2.add (local.get $err)
              (f64x2.add (f64x2.promote_low_f32x4 (local.get $te))
                         (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $te) (local.get $te))))))
            (local.set $sig (f64x2.add (local.get $sig)
              (f64x2.add (f64x2.promote_low_f32x4 (local.get $tw))
                         (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $tw) (local.get $tw))))))
            (br $vec)))
        ;; The proof above needs every |e| under 0.75 s (0.625 leaves room for a
        ;; rounded e), and float32 squares need the largest |e| to be 0 or 2^-40 and more.
        (local.set $m (call $max4 (local.get $mxr)))
        (if (i32.or (f32.ge (local.get $m) (f32.mul (f32.const 0.625) (local.get $sf)))
                    (i32.and (f32.gt (local.get $m) (f32.const 0)) (f32.lt (local.get $m) (f32.const 0x1p-40))))
          (then (local.set $bad (i32.const 1))))
        (local.set $mx (f32x4.pmax (local.get $mx) (local.get $mxr)))
        ;; NaN, and only NaN, makes the sum of squares NaN: its byte (0, as a typed array stores
        ;; NaN) is not what the clip above gives, so the run is quantized again as quantize_contig does.
        (if (v128.any_true (f64x2.ne (local.get $sig) (local.get $sig)))
          (then (call $splat (local.get $sp) (local.get $bp))
                (call $span_f32 (local.get $in0) (local.get $out0) (i32.sub (local.get $len) (local.get $left))
                                (i32.const 0) (i32.const 64) (i32.const 0) (local.get $lo) (local.get $hi))))
        ;; The run's last elements, one at a time, in float64 as error_contig computes them.
        (block $tdone
          (loop $tail
            (br_if $tdone (i32.eqz (local.get $left)))
            (local.set $xs (f32.load (local.get $in)))
            (local.set $v (f32.div (local.get $xs) (local.get $sf)))
            (local.set $v (select (f32.const -4194304) (local.get $v) (f32.lt (local.get $v) (f32.const -4194304))))
            (local.set $qs (i32.sub (i32.reinterpret_f32 (f32.add (local.get $v) (f32.const 12582912))) (i32.load (local.get $bp))))
            (local.set $qs (select (local.get $lo) (local.get $qs) (i32.lt_s (local.get $qs) (local.get $lo))))
            (local.set $qs (select (local.get $hi) (local.get $qs) (i32.gt_s (local.get $qs) (local.get $hi))))
            (local.set $qs (select (local.get $qs) (i32.const 0) (f32.eq (local.get $xs) (local.get $xs))))
            (i32.store8 (local.get $out) (local.get $qs))
            (local.set $w (f64.promote_f32 (local.get $xs)))
            (local.set $ed (f64.sub (local.get $w) (f64.mul (local.get $ss) (f64.convert_i32_s
              (i32.sub (local.get $qs) (local.get $zs))))))
            (local.set $sig1 (f64.add (local.get $sig1) (f64.mul (local.get $w) (local.get $w))))
            (local.set $err1 (f64.add (local.get $err1) (f64.mul (local.get $ed) (local.get $ed))))
            (local.set $mx1 (f64.max (local.get $mx1) (f64.abs (local.get $ed))))
            (local.set $in (i32.add (local.get $in) (i32.const 4)))
            (local.set $out (i32.add (local.get $out) (i32.const 1)))
            (local.set $left (i32.sub (local.get $left) (i32.const 1)))
            (br $tail)))
        (local.set $n (i32.sub (local.get $n) (local.get $len)))
        (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
        (local.set $bp (i32.add (local.get $bp) (i32.const 4)))
        (local.set $len (local.get $run))
        (br $runs)))
    (f64.store (local.get $acc) (f64.add (f64.load (local.get $acc))
      (f64.add (local.get $sig1) (f64.add (f64x2.extract_lane 0 (local.get $sig)) (f64x2.extract_lane 1 (local.get $sig))))))
    (f64.store offset=8 (local.get $acc) (f64.add (f64.load offset=8 (local.get $acc))
      (f64.add (local.get $err1) (f64.add (f64x2.extract_lane 0 (local.get $err)) (f64x2.extract_lane 1 (local.get $err))))))
    (f64.store offset=16 (local.get $acc) (f64.max (f64.load offset=16 (local.get $acc))
      (f64.max (local.get $mx1) (f64.promote_f32 (call $max4 (local.get $mx))))))
    (local.get $bad))

  ;; A block's scale and zero point from its min and max, as computeBlockParams
  ;; (src/qparams.ts) computes them in float32 arithmetic: every operation in
  ;; float64, rounded to float32 where it rounds with Math.fround. Stores the
  ;; scale at $sp and the bias (0x4B400000 - zero point) at $bp. Returns 0, 1
  ;; for a zero range (scale 1, the fixed zero point $fzp, 0 in linear mode),
  ;; or 2 when an intermediate is not finite (the caller's JavaScript then
  ;; throws what computeBlockParams throws).
  (func $block_params (param $mn f32) (param $mx f32) (param $sym i32) (param $qmin i32) (param $qmax i32)
                      (param $fzp i32) (param $sp i32) (param $bp i32) (result i32)
    (local $lo f64) (local $hi f64) (local $w f32) (local $s f32) (local $z f32) (local $zp i32) (local $zero i32)
    (if (local.get $sym)
      (then (local.set $hi (f64.max (f64.abs (f64.promote_f32 (local.get $mn))) (f64.abs (f64.promote_f32 (local.get $mx)))))
            (local.set $lo (f64.neg (local.get $hi))))
      (else (local.set $lo (f64.min (f64.const 0) (f64.promote_f32 (local.get $mn))))
            (local.set $hi (f64.max (f64.const 0) (f64.promote_f32 (local.get $mx))))))
    (local.set $w (f32.demote_f64 (f64.sub (local.get $hi) (local.get $lo))))
    (local.set $s (f32.demote_f64 (f64.div (f64.promote_f32 (local.get $w))
                                          (f64.convert_i32_s (i32.sub (local.get $qmax) (local.get $qmin))))))
    (local.set $zp (local.get $fzp))
    (if (i32.and (i32.eqz (local.get $sym)) (f32.ne (local.get $w) (f32.const 0)))
      (then
        ;; z = round(round(qmin * hi - qmax * lo) / width), each product rounded first.
        (local.set $z (f32.demote_f64 (f64.div
          (f64.promote_f32 (f32.demote_f64 (f64.sub
            (f64.promote_f32 (f32.demote_f64 (f64.mul (f64.convert_i32_s (local.get $qmin)) (local.get $hi))))
            (f64.promote_f32 (f32.demote_f64 (f64.mul (f64.convert_i32_s (local.get $qmax)) (local.get $lo)))))))
          (f64.promote_f32 (local.get $w)))))
        (if (f32.ne (f32.sub (local.get $z) (local.get $z)) (f32.const 0)) (then (return (i32.const 2))))
        ;; Rounded half to even, then clipped (in float: a huge z must not trap the conversion).
        (local.set $zp (i32.trunc_f32_s (f32.min (f32.convert_i32_s (local.get $qmax))
          (f32.max (f32.convert_i32_s (local.get $qmin)) (f32.nearest (local.get $z))))))))
    (if (f32.ne (f32.sub (local.get $s) (local.get $s)) (f32.const 0)) (then (return (i32.const 2))))
    (if (f32.eq (local.get $s) (f32.const 0))
      (then (local.set $s (f32.const 1)) (local.set $zp (local.get $fzp)) (local.set $zero (i32.const 1))))
    (f32.store (local.get $sp) (local.get $s))
    (i32.store (local.get $bp) (i32.sub (i32.const 0x4B400000) (local.get $zp)))
    (local.get $zero))

  ;; The lanes' min (or max) of $v.
  (func $min4 (param $v v128) (result f32)
    (f32.min (f32.min (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
             (f32.min (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))
  (func $max4 (param $v v128) (result f32)
    (f32.max (f32.max (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
             (f32.max (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))

  ;; Observes, computes the parameters of and quantizes $nb blocks of $run
  ;; contiguous float32 values each (a one-pass slab: per channel on axis 0,
  ;; or per block), adding the error sums to $acc as quantize_contig_err does:
  ;; one pass where minmax_contig, JavaScript and quantize_contig_err took
  ;; three. While block i is quantized (bound by its arithmetic), the same
  ;; loop takes the min and max of block i + 1, whose reads then cost nothing.
  ;; Mode: $sym 1 for linear_symmetric, 0 for linear; range [$qmin, $qmax],
  ;; fixed zero point $fzp (0 in linear mode). Writes each block's scale to
  ;; $sp, its bias to $bp, and the count of zero-range blocks to $zr. Returns
  ;; quantize_contig_err's flag (1: redo the sums with error_contig), or 2,
  ;; everything else then unspecified, when a value or parameter is not finite
  ;; (Infinity, NaN, or a square beyond float32): the caller redoes the slab in
  ;; the two-pass way, which finds and names the culprit.
  (func (export "observe_quantize_err") (param $in i32) (param $out i32) (param $nb i32) (param $run i32)
                                        (param $sym i32) (param $qmin i32) (param $qmax i32) (param $fzp i32)
                                        (param $sp i32) (param $bp i32) (param $acc i32) (param $zr i32) (result i32)
    (local $blk i32) (local $left i32) (local $j i32) (local $nx i32) (local $p i32) (local $bad i32) (local $st i32)
    (local $zeros i32) (local $sf f32) (local $shf f32) (local $m f32) (local $mn f32) (local $mxs f32)
    (local $si v128) (local $b v128) (local $sh v128) (local $sl v128) (local $lof v128) (local $hif v128)
    (local $M v128) (local $ff v128) (local $x v128) (local $y v128) (local $f v128)
    (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128) (local $k v128) (local $e v128)
    (local $te v128) (local $tw v128) (local $sig v128) (local $err v128) (local $mxr v128) (local $mx v128)
    (local $nmn v128) (local $nmx v128)
    (local $xs f32) (local $v f32) (local $qs i32) (local $ss f64) (local $zs i32) (local $w f64) (local $ed f64)
    (local $sig1 f64) (local $err1 f64) (local $mx1 f64)
    (local.set $M (f32x4.splat (f32.const 12582912)))
    (local.set $ff (i16x8.splat (i32.const 255)))
    ;; Block 0's min and max.
    (local.set $nmn (f32x4.splat (f32.const inf)))
    (local.set $nmx (f32x4.splat (f32.const -inf)))
    (local.set $p (local.get $in))
    (local.set $left (local.get $run))
    (block $d0
      (loop $l0
        (br_if $d0 (i32.lt_u (local.get $left) (i32.const 16)))
        (local.set $nmn (f32x4.pmin (f32x4.pmin (local.get $nmn) (v128.load (local.get $p)))
                                    (f32x4.pmin (v128.load offset=16 (local.get $p)) (v128.load offset=32 (local.get $p)))))
        (local.set $nmn (f32x4.pmin (local.get $nmn) (v128.load offset=48 (local.get $p))))
        (local.set $nmx (f32x4.pmax (f32x4.pmax (local.get $nmx) (v128.load (local.get $p)))
                                    (f32x4.pmax (v128.load offset=16 (local.get $p)) (v128.load offset=32 (local.get $p)))))
        (local.set $nmx (f32x4.pmax (local.get $nmx) (v128.load offset=48 (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (local.set $left (i32.sub (local.get $left) (i32.const 16)))
        (br $l0)))
    (local.set $mn (call $min4 (local.get $nmn)))
    (local.set $mxs (call $max4 (local.get $nmx)))
    (block $t0
      (loop $l0t
        (br_if $t0 (i32.eqz (local.get $left)))
        (local.set $mn (f32.min (local.get $mn) (f32.load (local.get $p))))
        (local.set $mxs (f32.max (local.get $mxs) (f32.load (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (local.set $left (i32.sub (local.get $left) (i32.const 1)))
        (br $l0t)))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $blk) (local.get $nb)))
        (local.set $st (call $block_params (local.get $mn) (local.get $mxs) (local.get $sym) (local.get $qmin)
                                           (local.get $qmax) (local.get $fzp) (local.get $sp) (local.get $bp)))
        (if (i32.eq (local.get $st) (i32.const 2)) (then (return (i32.const 2))))
        (local.set $zeros (i32.add (local.get $zeros) (local.get $st)))
        (local.set $sf (f32.load (local.get $sp)))
        (local.set $si (f32x4.splat (local.get $sf)))
        (local.set $b (v128.load32_splat (local.get $bp)))
        (local.set $zs (i32.sub (i32.const 0x4B400000) (i32.load (local.get $bp))))
        (local.set $lof (f32x4.splat (f32.convert_i32_s (i32.add (i32.const 12582912) (i32.sub (local.get $qmin) (local.get $zs))))))
        (local.set $hif (f32x4.splat (f32.convert_i32_s (i32.add (i32.const 12582912) (i32.sub (local.get $qmax) (local.get $zs))))))
        (local.set $shf (f32.reinterpret_i32 (i32.and (i32.reinterpret_f32 (local.get $sf)) (i32.const 0xFFFFF000))))
        (local.set $sh (f32x4.splat (local.get $shf)))
        (local.set $sl (f32x4.splat (f32.sub (local.get $sf) (local.get $shf))))
        (local.set $ss (f64.promote_f32 (local.get $sf)))
        (if (i32.eqz (i32.and (f32.ge (local.get $sf) (f32.const 0x1p-40)) (f32.le (local.get $sf) (f32.const 0x1p40))))
          (then (local.set $bad (i32.const 1))))
        (local.set $mxr (v128.const i32x4 0 0 0 0))
        (local.set $nmn (f32x4.splat (f32.const inf)))
        (local.set $nmx (f32x4.splat (f32.const -inf)))
        ;; The next block, or this one again for the last (its min and max then unused).
        (local.set $nx (local.get $in))
        (if (i32.lt_u (i32.add (local.get $blk) (i32.const 1)) (local.get $nb))
          (then (local.set $nx (i32.add (local.get $in) (i32.shl (local.get $run) (i32.const 2))))))
        (local.set $left (local.get $run))
        (block $vdone
          (loop $vec
            (br_if $vdone (i32.lt_u (local.get $left) (i32.const 16)))
            ;; As quantize_contig_err, plus the next block's min and max.
            (local.set $te (v128.const i32x4 0 0 0 0))
            (local.set $tw (v128.const i32x4 0 0 0 0))
            (local.set $j (i32.const 2))
            (loop $groups
              (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
                (f32x4.add (f32x4.div (local.tee $x (v128.load offset=0 (local.get $in))) (local.get $si)) (local.get $M)))))
              (local.set $q0 (i32x4.sub (local.get $f) (local.get $b)))
              (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
              (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                       (f32x4.mul (local.get $sl) (local.get $k))))
              (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
              (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
              (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
              (local.set $y (v128.load offset=0 (local.get $nx)))
              (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
              (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
              (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
                (f32x4.add (f32x4.div (local.tee $x (v128.load offset=16 (local.get $in))) (local.get $si)) (local.get $M)))))
              (local.set $q1 (i32x4.sub (local.get $f) (local.get $b)))
              (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
              (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                       (f32x4.mul (local.get $sl) (local.get $k))))
              (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
              (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
              (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
              (local.set $y (v128.load offset=16 (local.get $nx)))
              (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
              (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
              (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
                (f32x4.add (f32x4.div (local.tee $x (v128.load offset=32 (local.get $in))) (local.get $si)) (local.get $M)))))
              (local.set $q2 (i32x4.sub (local.get $f) (local.get $b)))
              (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
              (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                       (f32x4.mul (local.get $sl) (local.get $k))))
              (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
              (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
              (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
              (local.set $y (v128.load offset=32 (local.get $nx)))
              (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
              (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
              (local.set $f (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
                (f32x4.add (f32x4.div (local.tee $x (v128.load offset=48 (local.get $in))) (local.get $si)) (local.get $M)))))
              (local.set $q3 (i32x4.sub (local.get $f) (local.get $b)))
              (local.set $k (f32x4.sub (local.get $f) (local.get $M)))
              (local.set $e (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $sh) (local.get $k)))
                                       (f32x4.mul (local.get $sl) (local.get $k))))
              (local.set $mxr (f32x4.pmax (local.get $mxr) (f32x4.abs (local.get $e))))
              (local.set $te (f32x4.add (local.get $te) (f32x4.mul (local.get $e) (local.get $e))))
              (local.set $tw (f32x4.add (local.get $tw) (f32x4.mul (local.get $x) (local.get $x))))
              (local.set $y (v128.load offset=48 (local.get $nx)))
              (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
              (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
              (v128.store (local.get $out)
                (i8x16.narrow_i16x8_u
                  (v128.and (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)) (local.get $ff))
                  (v128.and (i16x8.narrow_i32x4_s (local.get $q2) (local.get $q3)) (local.get $ff))))
              (local.set $in (i32.add (local.get $in) (i32.const 64)))
              (local.set $nx (i32.add (local.get $nx) (i32.const 64)))
              (local.set $out (i32.add (local.get $out) (i32.const 16)))
              (local.set $left (i32.sub (local.get $left) (i32.const 16)))
              (br_if $groups (i32.and (local.tee $j (i32.sub (local.get $j) (i32.const 1)))
                                      (i32.ge_u (local.get $left) (i32.const 16)))))
            (local.set $err (f64x2.add (local.get $err)
              (f64x2.add (f64x2.promote_low_f32x4 (local.get $te))
                         (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $te) (local.get $te))))))
            (local.set $sig (f64x2.add (local.get $sig)
              (f64x2.add (f64x2.promote_low_f32x4 (local.get $tw))
                         (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $tw) (local.get $tw))))))
            (br $vec)))
        ;; quantize_contig_err's conditions for its float32 error sums.
        (local.set $m (call $max4 (local.get $mxr)))
        (if (i32.or (f32.ge (local.get $m) (f32.mul (f32.const 0.625) (local.get $sf)))
                    (i32.and (f32.gt (local.get $m) (f32.const 0)) (f32.lt (local.get $m) (f32.const 0x1p-40))))
          (then (local.set $bad (i32.const 1))))
        (local.set $mx (f32x4.pmax (local.get $mx) (local.get $mxr)))
        (local.set $mn (call $min4 (local.get $nmn)))
        (local.set $mxs (call $max4 (local.get $nmx)))
        ;; The block's last elements, one at a time, in float64 as error_contig computes them
        ;; (finite values only: anything else fails the slab below); and the next block's.
        (block $tdone
          (loop $tail
            (br_if $tdone (i32.eqz (local.get $left)))
            (local.set $xs (f32.load (local.get $in)))
            (local.set $v (f32.div (local.get $xs) (local.get $sf)))
            (local.set $v (select (f32.const -4194304) (local.get $v) (f32.lt (local.get $v) (f32.const -4194304))))
            (local.set $qs (i32.sub (i32.reinterpret_f32 (f32.add (local.get $v) (f32.const 12582912))) (i32.load (local.get $bp))))
            (local.set $qs (select (local.get $qmin) (local.get $qs) (i32.lt_s (local.get $qs) (local.get $qmin))))
            (local.set $qs (select (local.get $qmax) (local.get $qs) (i32.gt_s (local.get $qs) (local.get $qmax))))
            (i32.store8 (local.get $out) (local.get $qs))
            (local.set $w (f64.promote_f32 (local.get $xs)))
            (local.set $ed (f64.sub (local.get $w) (f64.mul (local.get $ss) (f64.convert_i32_s
              (i32.sub (local.get $qs) (local.get $zs))))))
            (local.set $sig1 (f64.add (local.get $sig1) (f64.mul (local.get $w) (local.get $w))))
            (local.set $err1 (f64.add (local.get $err1) (f64.mul (local.get $ed) (local.get $ed))))
            (local.set $mx1 (f64.max (local.get $mx1) (f64.abs (local.get $ed))))
            (local.set $mn (f32.min (local.get $mn) (f32.load (local.get $nx))))
            (local.set $mxs (f32.max (local.get $mxs) (f32.load (local.get $nx))))
            (local.set $in (i32.add (local.get $in) (i32.const 4)))
            (local.set $nx (i32.add (local.get $nx) (i32.const 4)))
            (local.set $out (i32.add (local.get $out) (i32.const 1)))
            (local.set $left (i32.sub (local.get $left) (i32.const 1)))
            (br $tail)))
        (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
        (local.set $bp (i32.add (local.get $bp) (i32.const 4)))
        (local.set $blk (i32.add (local.get $blk) (i32.const 1)))
        (br $blocks)))
    ;; Infinity and NaN make the sum of squares Infinity or NaN (so may huge finite values: redone too).
    (local.set $w (f64.add (local.get $sig1) (f64.add (f64x2.extract_lane 0 (local.get $sig)) (f64x2.extract_lane 1 (local.get $sig)))))
    (if (f64.ne (f64.sub (local.get $w) (local.get $w)) (f64.const 0)) (then (return (i32.const 2))))
    (f64.store (local.get $acc) (f64.add (f64.load (local.get $acc)) (local.get $w)))
    (f64.store offset=8 (local.get $acc) (f64.add (f64.load offset=8 (local.get $acc))
      (f64.add (local.get $err1) (f64.add (f64x2.extract_lane 0 (local.get $err)) (f64x2.extract_lane 1 (local.get $err))))))
    (f64.store offset=16 (local.get $acc) (f64.max (f64.load offset=16 (local.get $acc))
      (f64.max (local.get $mx1) (f64.promote_f32 (call $max4 (local.get $mx))))))
    (i32.store (local.get $zr) (local.get $zeros))
    (local.get $bad))

  ;; As observe_quantize_err without the report: observes, computes the
  ;; parameters of and quantizes $nb blocks of $run contiguous float32 values
  ;; in one pass, at about the cost of quantize_contig alone. Each value is
  ;; also added to a float32 sum whose only use is to turn Infinity or NaN at
  ;; the end (as may a huge sum of finite values: redone, same result):
  ;; status 2 then, and the caller takes the three steps. Writes each block's
  ;; scale to $sp and bias to $bp, the count of zero-range blocks to $zr.
  (func (export "observe_quantize") (param $in i32) (param $out i32) (param $nb i32) (param $run i32)
                                    (param $sym i32) (param $qmin i32) (param $qmax i32) (param $fzp i32)
                                    (param $sp i32) (param $bp i32) (param $zr i32) (result i32)
    (local $blk i32) (local $left i32) (local $nx i32) (local $p i32) (local $st i32) (local $zeros i32) (local $zs i32)
    (local $sf f32) (local $mn f32) (local $mxs f32) (local $xs f32) (local $v f32) (local $qs i32) (local $fs f32)
    (local $si v128) (local $b v128) (local $lof v128) (local $hif v128) (local $M v128) (local $ff v128)
    (local $y v128) (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128)
    (local $nmn v128) (local $nmx v128) (local $fin v128)
    (local.set $M (f32x4.splat (f32.const 12582912)))
    (local.set $ff (i16x8.splat (i32.const 255)))
    ;; Block 0's min, max and sum.
    (local.set $nmn (f32x4.splat (f32.const inf)))
    (local.set $nmx (f32x4.splat (f32.const -inf)))
    (local.set $p (local.get $in))
    (local.set $left (local.get $run))
    (block $d0
      (loop $l0
        (br_if $d0 (i32.lt_u (local.get $left) (i32.const 4)))
        (local.set $y (v128.load (local.get $p)))
        (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
        (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
        (local.set $fin (f32x4.add (local.get $fin) (local.get $y)))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (local.set $left (i32.sub (local.get $left) (i32.const 4)))
        (br $l0)))
    (local.set $mn (call $min4 (local.get $nmn)))
    (local.set $mxs (call $max4 (local.get $nmx)))
    (block $t0
      (loop $l0t
        (br_if $t0 (i32.eqz (local.get $left)))
        (local.set $xs (f32.load (local.get $p)))
        (local.set $mn (f32.min (local.get $mn) (local.get $xs)))
        (local.set $mxs (f32.max (local.get $mxs) (local.get $xs)))
        (local.set $fs (f32.add (local.get $fs) (local.get $xs)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (local.set $left (i32.sub (local.get $left) (i32.const 1)))
        (br $l0t)))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $blk) (local.get $nb)))
        (local.set $st (call $block_params (local.get $mn) (local.get $mxs) (local.get $sym) (local.get $qmin)
                                           (local.get $qmax) (local.get $fzp) (local.get $sp) (local.get $bp)))
        (if (i32.eq (local.get $st) (i32.const 2)) (then (return (i32.const 2))))
        (local.set $zeros (i32.add (local.get $zeros) (local.get $st)))
        (local.set $sf (f32.load (local.get $sp)))
        (local.set $si (f32x4.splat (local.get $sf)))
        (local.set $b (v128.load32_splat (local.get $bp)))
        (local.set $zs (i32.sub (i32.const 0x4B400000) (i32.load (local.get $bp))))
        (local.set $lof (f32x4.splat (f32.convert_i32_s (i32.add (i32.const 12582912) (i32.sub (local.get $qmin) (local.get $zs))))))
        (local.set $hif (f32x4.splat (f32.convert_i32_s (i32.add (i32.const 12582912) (i32.sub (local.get $qmax) (local.get $zs))))))
        (local.set $nmn (f32x4.splat (f32.const inf)))
        (local.set $nmx (f32x4.splat (f32.const -inf)))
        ;; The next block, or this one again for the last (its min, max and sum then unused).
        (local.set $nx (local.get $in))
        (if (i32.lt_u (i32.add (local.get $blk) (i32.const 1)) (local.get $nb))
          (then (local.set $nx (i32.add (local.get $in) (i32.shl (local.get $run) (i32.const 2))))))
        (local.set $left (local.get $run))
        (block $vdone
          (loop $vec
            (br_if $vdone (i32.lt_u (local.get $left) (i32.const 16)))
            (local.set $q0 (i32x4.sub (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (v128.load offset=0 (local.get $in)) (local.get $si)) (local.get $M)))) (local.get $b)))
            (local.set $y (v128.load offset=0 (local.get $nx)))
            (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
            (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
            (local.set $fin (f32x4.add (local.get $fin) (local.get $y)))
            (local.set $q1 (i32x4.sub (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (v128.load offset=16 (local.get $in)) (local.get $si)) (local.get $M)))) (local.get $b)))
            (local.set $y (v128.load offset=16 (local.get $nx)))
            (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
            (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
            (local.set $fin (f32x4.add (local.get $fin) (local.get $y)))
            (local.set $q2 (i32x4.sub (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (v128.load offset=32 (local.get $in)) (local.get $si)) (local.get $M)))) (local.get $b)))
            (local.set $y (v128.load offset=32 (local.get $nx)))
            (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
            (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
            (local.set $fin (f32x4.add (local.get $fin) (local.get $y)))
            (local.set $q3 (i32x4.sub (f32x4.pmin (local.get $hif) (f32x4.pmax (local.get $lof)
              (f32x4.add (f32x4.div (v128.load offset=48 (local.get $in)) (local.get $si)) (local.get $M)))) (local.get $b)))
            (local.set $y (v128.load offset=48 (local.get $nx)))
            (local.set $nmn (f32x4.pmin (local.get $nmn) (local.get $y)))
            (local.set $nmx (f32x4.pmax (local.get $nmx) (local.get $y)))
            (local.set $fin (f32x4.add (local.get $fin) (local.get $y)))
            (v128.store (local.get $out)
              (i8x16.narrow_i16x8_u
                (v128.and (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)) (local.get $ff))
                (v128.and (i16x8.narrow_i32x4_s (local.get $q2) (local.get $q3)) (local.get $ff))))
            (local.set $in (i32.add (local.get $in) (i32.const 64)))
            (local.set $nx (i32.add (local.get $nx) (i32.const 64)))
            (local.set $out (i32.add (local.get $out) (i32.const 16)))
            (local.set $left (i32.sub (local.get $left) (i32.const 16)))
            (br $vec)))
        (local.set $mn (call $min4 (local.get $nmn)))
        (local.set $mxs (call $max4 (local.get $nmx)))
        ;; The block's last elements, and the next block's.
        (block $tdone
          (loop $tail
            (br_if $tdone (i32.eqz (local.get $left)))
            (local.set $v (f32.div (f32.load (local.get $in)) (local.get $sf)))
            (local.set $v (select (f32.const -4194304) (local.get $v) (f32.lt (local.get $v) (f32.const -4194304))))
            (local.set $qs (i32.sub (i32.reinterpret_f32 (f32.add (local.get $v) (f32.const 12582912))) (i32.load (local.get $bp))))
            (local.set $qs (select (local.get $qmin) (local.get $qs) (i32.lt_s (local.get $qs) (local.get $qmin))))
            (local.set $qs (select (local.get $qmax) (local.get $qs) (i32.gt_s (local.get $qs) (local.get $qmax))))
            (i32.store8 (local.get $out) (local.get $qs))
            (local.set $xs (f32.load (local.get $nx)))
            (local.set $mn (f32.min (local.get $mn) (local.get $xs)))
            (local.set $mxs (f32.max (local.get $mxs) (local.get $xs)))
            (local.set $fs (f32.add (local.get $fs) (local.get $xs)))
            (local.set $in (i32.add (local.get $in) (i32.const 4)))
            (local.set $nx (i32.add (local.get $nx) (i32.const 4)))
            (local.set $out (i32.add (local.get $out) (i32.const 1)))
            (local.set $left (i32.sub (local.get $left) (i32.const 1)))
            (br $tail)))
        (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
        (local.set $bp (i32.add (local.get $bp) (i32.const 4)))
        (local.set $blk (i32.add (local.get $blk) (i32.const 1)))
        (br $blocks)))
    (local.set $fs (f32.add (local.get $fs)
      (f32.add (f32.add (f32x4.extract_lane 0 (local.get $fin)) (f32x4.extract_lane 1 (local.get $fin)))
               (f32.add (f32x4.extract_lane 2 (local.get $fin)) (f32x4.extract_lane 3 (local.get $fin))))))
    (if (f32.ne (f32.sub (local.get $fs) (local.get $fs)) (f32.const 0)) (then (return (i32.const 2))))
    (i32.store (local.get $zr) (local.get $zeros))
    (i32.const 0))

  ;; Rows of $rowLen elements whose columns fall in blocks of $cb; the row
  ;; base block indices (one i32 per row touched) at $rb; the first row
  ;; starts at column $col. Scales and biases of block 0 at $sp and $bp.
  (func (export "quantize_rows") (param $in i32) (param $out i32) (param $n i32) (param $col i32) (param $rowLen i32)
                                 (param $cb i32) (param $rb i32) (param $sp i32) (param $bp i32)
                                 (param $lo i32) (param $hi i32) (param $f16 i32) (result i32)
    (local $base i32) (local $seg i32) (local $c i32) (local $rem i32) (local $blk i32) (local $len i32) (local $at i32)
    (local $bad i32)
    (block $done
      (loop $rows
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (local.set $base (i32.load (local.get $rb)))
        (local.set $rb (i32.add (local.get $rb) (i32.const 4)))
        (local.set $seg (i32.sub (local.get $rowLen) (local.get $col)))
        (if (i32.gt_u (local.get $seg) (local.get $n)) (then (local.set $seg (local.get $n))))
        (if (i32.eq (local.get $cb) (i32.const 1))
          (then
            (local.set $at (i32.shl (i32.add (local.get $base) (local.get $col)) (i32.const 2)))
            (local.set $bad (i32.or (local.get $bad)
              (call $span (local.get $in) (local.get $out) (local.get $seg)
                          (i32.add (local.get $sp) (local.get $at)) (i32.add (local.get $bp) (local.get $at)) (i32.const 64)
                          (local.get $lo) (local.get $hi) (local.get $f16))))
            (local.set $in (i32.add (local.get $in) (i32.shl (local.get $seg) (i32.const 2))))
            (local.set $out (i32.add (local.get $out) (local.get $seg))))
          (else
            (local.set $c (local.get $col))
            (local.set $rem (local.get $seg))
            (block $rdone
              (loop $runs
                (br_if $rdone (i32.eqz (local.get $rem)))
                (local.set $blk (i32.div_u (local.get $c) (local.get $cb)))
                (local.set $len (i32.sub (i32.mul (i32.add (local.get $blk) (i32.const 1)) (local.get $cb)) (local.get $c)))
                (if (i32.gt_u (local.get $len) (local.get $rem)) (then (local.set $len (local.get $rem))))
                (local.set $at (i32.shl (i32.add (local.get $base) (local.get $blk)) (i32.const 2)))
                (call $splat (i32.add (local.get $sp) (local.get $at)) (i32.add (local.get $bp) (local.get $at)))
                (local.set $bad (i32.or (local.get $bad)
                  (call $span (local.get $in) (local.get $out) (local.get $len) (i32.const 0) (i32.const 64) (i32.const 0)
                              (local.get $lo) (local.get $hi) (local.get $f16))))
                (local.set $in (i32.add (local.get $in) (i32.shl (local.get $len) (i32.const 2))))
                (local.set $out (i32.add (local.get $out) (local.get $len)))
                (local.set $c (i32.add (local.get $c) (local.get $len)))
                (local.set $rem (i32.sub (local.get $rem) (local.get $len)))
                (br $runs)))))
        (local.set $n (i32.sub (local.get $n) (local.get $seg)))
        (local.set $col (i32.const 0))
        (br $rows)))
    (local.get $bad))

  ;; Folds $n values of one block into the min at $minp and the max at $maxp
  ;; exactly as BlockRange.observe does (`if (x < lo) lo = x`, in order).
  ;; Returns 1 when a value is NaN or infinite. Finite runs take a vector
  ;; path whose only possible difference, the sign of a zero result, is
  ;; repaired by finding the first zero in order; non-finite runs are
  ;; redone one value at a time.
  (func $mm_run (param $in i32) (param $n i32) (param $minp i32) (param $maxp i32) (result i32)
    (local $p i32) (local $k i32) (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    (local $lo v128) (local $hi v128) (local $acc v128)
    (local $x f32) (local $slo f32) (local $shi f32) (local $sacc f32) (local $prev f32)
    (local.set $p (local.get $in))
    (local.set $k (local.get $n))
    (local.set $lo (f32x4.splat (f32.const inf)))
    (local.set $hi (f32x4.splat (f32.const -inf)))
    (local.set $acc (f32x4.splat (f32.const 0)))
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $k) (i32.const 16)))
        (local.set $x0 (v128.load offset=0 (local.get $p)))
        (local.set $x1 (v128.load offset=16 (local.get $p)))
        (local.set $x2 (v128.load offset=32 (local.get $p)))
        (local.set $x3 (v128.load offset=48 (local.get $p)))
        (local.set $lo (f32x4.pmin (local.get $lo)
          (f32x4.pmin (f32x4.pmin (local.get $x0) (local.get $x1)) (f32x4.pmin (local.get $x2) (local.get $x3)))))
        (local.set $hi (f32x4.pmax (local.get $hi)
          (f32x4.pmax (f32x4.pmax (local.get $x0) (local.get $x1)) (f32x4.pmax (local.get $x2) (local.get $x3)))))
        (local.set $acc (f32x4.add (local.get $acc)
          (f32x4.add
            (f32x4.add (f32x4.sub (local.get $x0) (local.get $x0)) (f32x4.sub (local.get $x1) (local.get $x1)))
            (f32x4.add (f32x4.sub (local.get $x2) (local.get $x2)) (f32x4.sub (local.get $x3) (local.get $x3))))))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (local.set $k (i32.sub (local.get $k) (i32.const 16)))
        (br $vec)))
    (block $done4
      (loop $vec4
        (br_if $done4 (i32.lt_u (local.get $k) (i32.const 4)))
        (local.set $x0 (v128.load (local.get $p)))
        (local.set $lo (f32x4.pmin (local.get $lo) (local.get $x0)))
        (local.set $hi (f32x4.pmax (local.get $hi) (local.get $x0)))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.sub (local.get $x0) (local.get $x0))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (local.set $k (i32.sub (local.get $k) (i32.const 4)))
        (br $vec4)))
    (local.set $slo (f32.min (f32.min (f32x4.extract_lane 0 (local.get $lo)) (f32x4.extract_lane 1 (local.get $lo)))
                             (f32.min (f32x4.extract_lane 2 (local.get $lo)) (f32x4.extract_lane 3 (local.get $lo)))))
    (local.set $shi (f32.max (f32.max (f32x4.extract_lane 0 (local.get $hi)) (f32x4.extract_lane 1 (local.get $hi)))
                             (f32.max (f32x4.extract_lane 2 (local.get $hi)) (f32x4.extract_lane 3 (local.get $hi)))))
    (local.set $sacc (f32.add (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
                              (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $k)))
        (local.set $x (f32.load (local.get $p)))
        (if (f32.lt (local.get $x) (local.get $slo)) (then (local.set $slo (local.get $x))))
        (if (f32.gt (local.get $x) (local.get $shi)) (then (local.set $shi (local.get $x))))
        (local.set $sacc (f32.add (local.get $sacc) (f32.sub (local.get $x) (local.get $x))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (local.set $k (i32.sub (local.get $k) (i32.const 1)))
        (br $tail)))
    (if (f32.ne (local.get $sacc) (local.get $sacc))
      (then
        ;; Non-finite: redo in order, one value at a time.
        (local.set $slo (f32.load (local.get $minp)))
        (local.set $shi (f32.load (local.get $maxp)))
        (local.set $p (local.get $in))
        (local.set $k (local.get $n))
        (block $sdone
          (loop $slow
            (br_if $sdone (i32.eqz (local.get $k)))
            (local.set $x (f32.load (local.get $p)))
            (if (f32.lt (local.get $x) (local.get $slo)) (then (local.set $slo (local.get $x))))
            (if (f32.gt (local.get $x) (local.get $shi)) (then (local.set $shi (local.get $x))))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (local.set $k (i32.sub (local.get $k) (i32.const 1)))
            (br $slow)))
        (f32.store (local.get $minp) (local.get $slo))
        (f32.store (local.get $maxp) (local.get $shi))
        (return (i32.const 1))))
    (local.set $prev (f32.load (local.get $minp)))
    (if (f32.lt (local.get $slo) (local.get $prev))
      (then
        (if (f32.eq (local.get $slo) (f32.const 0))
          (then (local.set $slo (call $first_zero (local.get $in)))))
        (f32.store (local.get $minp) (local.get $slo))))
    (local.set $prev (f32.load (local.get $maxp)))
    (if (f32.gt (local.get $shi) (local.get $prev))
      (then
        (if (f32.eq (local.get $shi) (f32.const 0))
          (then (local.set $shi (call $first_zero (local.get $in)))))
        (f32.store (local.get $maxp) (local.get $shi))))
    (i32.const 0))

  ;; The first value equal to 0 (either sign) from $p on; one must exist.
  (func $first_zero (param $p i32) (result f32)
    (local $x f32)
    (loop $scan
      (local.set $x (f32.load (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (br_if $scan (f32.ne (local.get $x) (f32.const 0))))
    (local.get $x))

  ;; Per-column blocks: value i folds into min $minp[i] and max $maxp[i].
  ;; Each lane sees its own block's values in order, so this is exact.
  (func $mm_cols (param $in i32) (param $n i32) (param $minp i32) (param $maxp i32) (result i32)
    (local $x v128) (local $acc v128) (local $xs f32) (local $sacc f32)
    (local.set $acc (f32x4.splat (f32.const 0)))
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $n) (i32.const 4)))
        (local.set $x (v128.load (local.get $in)))
        (v128.store (local.get $minp) (f32x4.pmin (v128.load (local.get $minp)) (local.get $x)))
        (v128.store (local.get $maxp) (f32x4.pmax (v128.load (local.get $maxp)) (local.get $x)))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.sub (local.get $x) (local.get $x))))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (local.set $minp (i32.add (local.get $minp) (i32.const 16)))
        (local.set $maxp (i32.add (local.get $maxp) (i32.const 16)))
        (local.set $n (i32.sub (local.get $n) (i32.const 4)))
        (br $vec)))
    (local.set $sacc (f32.add (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
                              (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $n)))
        (local.set $xs (f32.load (local.get $in)))
        (if (f32.lt (local.get $xs) (f32.load (local.get $minp))) (then (f32.store (local.get $minp) (local.get $xs))))
        (if (f32.gt (local.get $xs) (f32.load (local.get $maxp))) (then (f32.store (local.get $maxp) (local.get $xs))))
        (local.set $sacc (f32.add (local.get $sacc) (f32.sub (local.get $xs) (local.get $xs))))
        (local.set $in (i32.add (local.get $in) (i32.const 4)))
        (local.set $minp (i32.add (local.get $minp) (i32.const 4)))
        (local.set $maxp (i32.add (local.get $maxp) (i32.const 4)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $tail)))
    (f32.ne (local.get $sacc) (local.get $sacc)))

  (func (export "minmax_run") (param $in i32) (param $n i32) (param $minp i32) (param $maxp i32) (result i32)
    (call $mm_run (local.get $in) (local.get $n) (local.get $minp) (local.get $maxp)))

  ;; A contiguous layout (as quantize_contig); returns 1 when any value is non-finite.
  (func (export "minmax_contig") (param $in i32) (param $n i32) (param $first i32) (param $run i32)
                                 (param $minp i32) (param $maxp i32) (result i32)
    (local $len i32) (local $bad i32)
    (local.set $len (local.get $first))
    (block $done
      (loop $runs
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (if (i32.gt_u (local.get $len) (local.get $n)) (then (local.set $len (local.get $n))))
        (local.set $bad (i32.or (local.get $bad)
          (call $mm_run (local.get $in) (local.get $len) (local.get $minp) (local.get $maxp))))
        (local.set $in (i32.add (local.get $in) (i32.shl (local.get $len) (i32.const 2))))
        (local.set $n (i32.sub (local.get $n) (local.get $len)))
        (local.set $minp (i32.add (local.get $minp) (i32.const 4)))
        (local.set $maxp (i32.add (local.get $maxp) (i32.const 4)))
        (local.set $len (local.get $run))
        (br $runs)))
    (local.get $bad))

  ;; Rows (as quantize_rows); mins and maxs of block 0 at $minp and $maxp.
  (func (export "minmax_rows") (param $in i32) (param $n i32) (param $col i32) (param $rowLen i32) (param $cb i32)
                               (param $rb i32) (param $minp i32) (param $maxp i32) (result i32)
    (local $base i32) (local $seg i32) (local $c i32) (local $rem i32) (local $blk i32) (local $len i32) (local $at i32)
    (local $bad i32)
    (block $done
      (loop $rows
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (local.set $base (i32.load (local.get $rb)))
        (local.set $rb (i32.add (local.get $rb) (i32.const 4)))
        (local.set $seg (i32.sub (local.get $rowLen) (local.get $col)))
        (if (i32.gt_u (local.get $seg) (local.get $n)) (then (local.set $seg (local.get $n))))
        (if (i32.eq (local.get $cb) (i32.const 1))
          (then
            (local.set $at (i32.shl (i32.add (local.get $base) (local.get $col)) (i32.const 2)))
            (local.set $bad (i32.or (local.get $bad)
              (call $mm_cols (local.get $in) (local.get $seg)
                             (i32.add (local.get $minp) (local.get $at)) (i32.add (local.get $maxp) (local.get $at)))))
            (local.set $in (i32.add (local.get $in) (i32.shl (local.get $seg) (i32.const 2)))))
          (else
            (local.set $c (local.get $col))
            (local.set $rem (local.get $seg))
            (block $rdone
              (loop $runs
                (br_if $rdone (i32.eqz (local.get $rem)))
                (local.set $blk (i32.div_u (local.get $c) (local.get $cb)))
                (local.set $len (i32.sub (i32.mul (i32.add (local.get $blk) (i32.const 1)) (local.get $cb)) (local.get $c)))
                (if (i32.gt_u (local.get $len) (local.get $rem)) (then (local.set $len (local.get $rem))))
                (local.set $at (i32.shl (i32.add (local.get $base) (local.get $blk)) (i32.const 2)))
                (local.set $bad (i32.or (local.get $bad)
                  (call $mm_run (local.get $in) (local.get $len)
                                (i32.add (local.get $minp) (local.get $at)) (i32.add (local.get $maxp) (local.get $at)))))
                (local.set $in (i32.add (local.get $in) (i32.shl (local.get $len) (i32.const 2))))
                (local.set $c (i32.add (local.get $c) (local.get $len)))
                (local.set $rem (i32.sub (local.get $rem) (local.get $len)))
                (br $runs)))))
        (local.set $n (i32.sub (local.get $n) (local.get $seg)))
        (local.set $col (i32.const 0))
        (br $rows)))
    (local.get $bad))

  ;; Packs $n 4-bit values (one per byte at $in) two to a byte at $out, low nibble first.
  (func (export "pack4") (param $in i32) (param $out i32) (param $n i32)
    (local $lowNibble v128) (local $highNibble v128) (local $a v128) (local $b v128)
    (local.set $lowNibble (i16x8.splat (i32.const 0x0f)))
    (local.set $highNibble (i16x8.splat (i32.const 0xf0)))
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $n) (i32.const 32)))
        (local.set $a (v128.load offset=0 (local.get $in)))
        (local.set $b (v128.load offset=16 (local.get $in)))
        (v128.store (local.get $out)
          (i8x16.narrow_i16x8_u
            (v128.or (v128.and (local.get $a) (local.get $lowNibble))
                     (v128.and (i16x8.shr_u (local.get $a) (i32.const 4)) (local.get $highNibble)))
            (v128.or (v128.and (local.get $b) (local.get $lowNibble))
                     (v128.and (i16x8.shr_u (local.get $b) (i32.const 4)) (local.get $highNibble)))))
        (local.set $in (i32.add (local.get $in) (i32.const 32)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (local.set $n (i32.sub (local.get $n) (i32.const 32)))
        (br $vec)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.lt_u (local.get $n) (i32.const 2)))
        (i32.store8 (local.get $out)
          (i32.or (i32.and (i32.load8_u (local.get $in)) (i32.const 0x0f))
                  (i32.shl (i32.load8_u offset=1 (local.get $in)) (i32.const 4))))
        (local.set $in (i32.add (local.get $in) (i32.const 2)))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 2)))
        (br $tail)))
    (if (local.get $n)
      (then (i32.store8 (local.get $out) (i32.and (i32.load8_u (local.get $in)) (i32.const 0x0f))))))

  ;; float16 bits (i32 lanes) to float32 bits, exactly; NaN becomes 0x7FC00000
  ;; as in the JavaScript decoder. Exponent and mantissa shifted into
  ;; float32's fields make the value times 2^-112 (a float32 subnormal for a
  ;; float16 subnormal): the product with 2^112 is exact.
  (func $h2f (param $h v128) (result v128)
    (local $o v128)
    ;; Exponent and mantissa moved to float32's places; times 2^112 rebias them exactly, subnormals included.
    (local.set $o (f32x4.mul (i32x4.shl (v128.and (local.get $h) (i32x4.splat (i32.const 0x7fff))) (i32.const 13))
                             (f32x4.splat (f32.const 0x1p112))))
    ;; Infinity and NaN (all exponent bits set): float32's infinity, or its canonical NaN.
    (local.set $o (v128.bitselect
      (v128.bitselect (i32x4.splat (i32.const 0x7fc00000)) (i32x4.splat (i32.const 0x7f800000))
        (i32x4.ne (v128.and (local.get $h) (i32x4.splat (i32.const 0x3ff))) (i32x4.splat (i32.const 0))))
      (local.get $o)
      (i32x4.eq (v128.and (local.get $h) (i32x4.splat (i32.const 0x7c00))) (i32x4.splat (i32.const 0x7c00)))))
    ;; The sign, but not on NaN (the JavaScript decoder gives every NaN as 0x7FC00000).
    (v128.or (local.get $o)
      (v128.andnot (i32x4.shl (v128.and (local.get $h) (i32x4.splat (i32.const 0x8000))) (i32.const 16))
        (i32x4.eq (local.get $o) (i32x4.splat (i32.const 0x7fc00000))))))

  ;; Decodes $n float16 values (u16 at $in) to float32 at $out.
  (func (export "decode_f16") (param $in i32) (param $out i32) (param $n i32)
    (local $h v128) (local $o v128)
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $n) (i32.const 4)))
        ;; $h2f inlined: called, it took twice as long.
        (local.set $h (i32x4.extend_low_i16x8_u (v128.load64_zero (local.get $in))))
        (local.set $o (f32x4.mul (i32x4.shl (v128.and (local.get $h) (i32x4.splat (i32.const 0x7fff))) (i32.const 13))
                                 (f32x4.splat (f32.const 0x1p112))))
        (local.set $o (v128.bitselect
          (v128.bitselect (i32x4.splat (i32.const 0x7fc00000)) (i32x4.splat (i32.const 0x7f800000))
            (i32x4.ne (v128.and (local.get $h) (i32x4.splat (i32.const 0x3ff))) (i32x4.splat (i32.const 0))))
          (local.get $o)
          (i32x4.eq (v128.and (local.get $h) (i32x4.splat (i32.const 0x7c00))) (i32x4.splat (i32.const 0x7c00)))))
        (v128.store (local.get $out) (v128.or (local.get $o)
          (v128.andnot (i32x4.shl (v128.and (local.get $h) (i32x4.splat (i32.const 0x8000))) (i32.const 16))
            (i32x4.eq (local.get $o) (i32x4.splat (i32.const 0x7fc00000))))))
        (local.set $in (i32.add (local.get $in) (i32.const 8)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (local.set $n (i32.sub (local.get $n) (i32.const 4)))
        (br $vec)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $n)))
        (f32.store (local.get $out) (f32x4.extract_lane 0 (call $h2f (i32x4.splat (i32.load16_u (local.get $in))))))
        (local.set $in (i32.add (local.get $in) (i32.const 2)))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $tail))))

  ;; Decodes $n bfloat16 values (u16 at $in) to float32 at $out: the bits shifted up 16.
  (func (export "decode_bf16") (param $in i32) (param $out i32) (param $n i32)
    (local $h v128)
    (block $done
      (loop $vec
        (br_if $done (i32.lt_u (local.get $n) (i32.const 8)))
        (local.set $h (v128.load (local.get $in)))
        (v128.store offset=0 (local.get $out) (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $h)) (i32.const 16)))
        (v128.store offset=16 (local.get $out) (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $h)) (i32.const 16)))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (local.set $n (i32.sub (local.get $n) (i32.const 8)))
        (br $vec)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $n)))
        (i32.store (local.get $out) (i32.shl (i32.load16_u (local.get $in)) (i32.const 16)))
        (local.set $in (i32.add (local.get $in) (i32.const 2)))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $tail))))
  ;; Error sums of quantized values (SPEC.md Section 8), for the report: adds
  ;; sum(w^2), sum(e^2) and max|e|, e = w - s * (q - zp), to the three f64 at
  ;; $acc, for $n float32 values at $in and their quantized bytes at $q, in
  ;; runs of $run elements per block (the first $first long) with float32
  ;; scales at $sp and biases (0x4B400000 - zp) at $bp. A byte b is the value
  ;; (b ^ $flip) - $flip: $flip is 128 for signed types, 0 for unsigned. Each e
  ;; is computed in float64 exactly as src/error_stats.ts computes it; the
  ;; sums are added in another order (two lanes), so they may differ from the
  ;; JavaScript sums in the last bits; the maximum does not.
  (func (export "error_contig") (param $in i32) (param $q i32) (param $n i32) (param $first i32) (param $run i32)
                                (param $sp i32) (param $bp i32) (param $flip i32) (param $acc i32)
    (local $len i32) (local $k i32) (local $s v128) (local $z v128) (local $fl v128)
    (local $x v128) (local $qi v128) (local $wl v128) (local $wh v128) (local $el v128) (local $eh v128)
    (local $sig v128) (local $err v128) (local $mx v128)
    (local $ss f64) (local $zs i32) (local $w f64) (local $e f64)
    (local $sig1 f64) (local $err1 f64) (local $mx1 f64)
    (local.set $fl (i32x4.splat (local.get $flip)))
    (local.set $len (local.get $first))
    (block $done
      (loop $runs
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (if (i32.gt_u (local.get $len) (local.get $n)) (then (local.set $len (local.get $n))))
        (local.set $ss (f64.promote_f32 (f32.load (local.get $sp))))
        (local.set $s (f64x2.splat (local.get $ss)))
        ;; flip + zp, with zp = 0x4B400000 - bias
        (local.set $zs (i32.add (local.get $flip) (i32.sub (i32.const 0x4B400000) (i32.load (local.get $bp)))))
        (local.set $z (i32x4.splat (local.get $zs)))
        (local.set $k (local.get $len))
        (block $vdone
          (loop $vec
            (br_if $vdone (i32.lt_u (local.get $k) (i32.const 4)))
            (local.set $x (v128.load (local.get $in)))
            (local.set $qi (i32x4.sub
              (v128.xor (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $q))))
                        (local.get $fl))
              (local.get $z)))
            (local.set $wl (f64x2.promote_low_f32x4 (local.get $x)))
            (local.set $wh (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))))
            (local.set $el (f64x2.sub (local.get $wl)
              (f64x2.mul (local.get $s) (f64x2.convert_low_i32x4_s (local.get $qi)))))
            (local.set $eh (f64x2.sub (local.get $wh)
              (f64x2.mul (local.get $s) (f64x2.convert_low_i32x4_s
                (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $qi) (local.get $qi))))))
            (local.set $sig (f64x2.add (local.get $sig)
              (f64x2.add (f64x2.mul (local.get $wl) (local.get $wl)) (f64x2.mul (local.get $wh) (local.get $wh)))))
            (local.set $err (f64x2.add (local.get $err)
              (f64x2.add (f64x2.mul (local.get $el) (local.get $el)) (f64x2.mul (local.get $eh) (local.get $eh)))))
            (local.set $mx (f64x2.pmax (local.get $mx)
              (f64x2.pmax (f64x2.abs (local.get $el)) (f64x2.abs (local.get $eh)))))
            (local.set $in (i32.add (local.get $in) (i32.const 16)))
            (local.set $q (i32.add (local.get $q) (i32.const 4)))
            (local.set $k (i32.sub (local.get $k) (i32.const 4)))
            (br $vec)))
        (block $tdone
          (loop $tail
            (br_if $tdone (i32.eqz (local.get $k)))
            (local.set $w (f64.promote_f32 (f32.load (local.get $in))))
            (local.set $e (f64.sub (local.get $w) (f64.mul (local.get $ss) (f64.convert_i32_s
              (i32.sub (i32.xor (i32.load8_u (local.get $q)) (local.get $flip)) (local.get $zs))))))
            (local.set $sig1 (f64.add (local.get $sig1) (f64.mul (local.get $w) (local.get $w))))
            (local.set $err1 (f64.add (local.get $err1) (f64.mul (local.get $e) (local.get $e))))
            (local.set $mx1 (f64.max (local.get $mx1) (f64.abs (local.get $e))))
            (local.set $in (i32.add (local.get $in) (i32.const 4)))
            (local.set $q (i32.add (local.get $q) (i32.const 1)))
            (local.set $k (i32.sub (local.get $k) (i32.const 1)))
            (br $tail)))
        (local.set $n (i32.sub (local.get $n) (local.get $len)))
        (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
        (local.set $bp (i32.add (local.get $bp) (i32.const 4)))
        (local.set $len (local.get $run))
        (br $runs)))
    (f64.store (local.get $acc) (f64.add (f64.load (local.get $acc))
      (f64.add (local.get $sig1) (f64.add (f64x2.extract_lane 0 (local.get $sig)) (f64x2.extract_lane 1 (local.get $sig))))))
    (f64.store offset=8 (local.get $acc) (f64.add (f64.load offset=8 (local.get $acc))
      (f64.add (local.get $err1) (f64.add (f64x2.extract_lane 0 (local.get $err)) (f64x2.extract_lane 1 (local.get $err))))))
    (f64.store offset=16 (local.get $acc) (f64.max (f64.load offset=16 (local.get $acc))
      (f64.max (local.get $mx1) (f64.max (f64x2.extract_lane 0 (local.get $mx)) (f64x2.extract_lane 1 (local.get $mx)))))))

  ;; As error_contig for $n elements of one row whose scales and biases are at
  ;; $sp and $bp, advancing $adv bytes per 4 elements: 16 when every element
  ;; has a block of its own (per channel on the last axis), 0 for one block
  ;; (the scratch splats, see $splat). Adds to the three f64 at $acc.
  (func $err_span (param $in i32) (param $q i32) (param $n i32) (param $sp i32) (param $bp i32) (param $adv i32)
                  (param $flip i32) (param $acc i32)
    (local $fz v128) (local $fl v128) (local $s v128) (local $x v128) (local $qi v128) (local $wl v128) (local $wh v128)
    (local $el v128) (local $eh v128) (local $sig v128) (local $err v128) (local $mx v128)
    (local $sadv i32) (local $w f64) (local $e f64) (local $sig1 f64) (local $err1 f64) (local $mx1 f64)
    (local.set $fl (i32x4.splat (local.get $flip)))
    ;; q - zp = (b ^ flip) - (flip + zp), zp = 0x4B400000 - bias
    (local.set $fz (i32x4.splat (i32.add (local.get $flip) (i32.const 0x4B400000))))
    (block $vdone
      (loop $vec
        (br_if $vdone (i32.lt_u (local.get $n) (i32.const 4)))
        (local.set $x (v128.load (local.get $in)))
        (local.set $s (v128.load (local.get $sp)))
        (local.set $qi (i32x4.sub
          (v128.xor (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $q)))) (local.get $fl))
          (i32x4.sub (local.get $fz) (v128.load (local.get $bp)))))
        (local.set $wl (f64x2.promote_low_f32x4 (local.get $x)))
        (local.set $wh (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))))
        (local.set $el (f64x2.sub (local.get $wl)
          (f64x2.mul (f64x2.promote_low_f32x4 (local.get $s)) (f64x2.convert_low_i32x4_s (local.get $qi)))))
        (local.set $eh (f64x2.sub (local.get $wh)
          (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $s) (local.get $s)))
                     (f64x2.convert_low_i32x4_s (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $qi) (local.get $qi))))))
        (local.set $sig (f64x2.add (local.get $sig)
          (f64x2.add (f64x2.mul (local.get $wl) (local.get $wl)) (f64x2.mul (local.get $wh) (local.get $wh)))))
        (local.set $err (f64x2.add (local.get $err)
          (f64x2.add (f64x2.mul (local.get $el) (local.get $el)) (f64x2.mul (local.get $eh) (local.get $eh)))))
        (local.set $mx (f64x2.pmax (local.get $mx) (f64x2.pmax (f64x2.abs (local.get $el)) (f64x2.abs (local.get $eh)))))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (local.set $q (i32.add (local.get $q) (i32.const 4)))
        (local.set $sp (i32.add (local.get $sp) (local.get $adv)))
        (local.set $bp (i32.add (local.get $bp) (local.get $adv)))
        (local.set $n (i32.sub (local.get $n) (i32.const 4)))
        (br $vec)))
    (local.set $sadv (i32.shr_u (local.get $adv) (i32.const 2)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.eqz (local.get $n)))
        (local.set $w (f64.promote_f32 (f32.load (local.get $in))))
        (local.set $e (f64.sub (local.get $w) (f64.mul (f64.promote_f32 (f32.load (local.get $sp))) (f64.convert_i32_s
          (i32.sub (i32.xor (i32.load8_u (local.get $q)) (local.get $flip))
                   (i32.sub (i32.add (local.get $flip) (i32.const 0x4B400000)) (i32.load (local.get $bp))))))))
        (local.set $sig1 (f64.add (local.get $sig1) (f64.mul (local.get $w) (local.get $w))))
        (local.set $err1 (f64.add (local.get $err1) (f64.mul (local.get $e) (local.get $e))))
        (local.set $mx1 (f64.max (local.get $mx1) (f64.abs (local.get $e))))
        (local.set $in (i32.add (local.get $in) (i32.const 4)))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (local.set $sp (i32.add (local.get $sp) (local.get $sadv)))
        (local.set $bp (i32.add (local.get $bp) (local.get $sadv)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $tail)))
    (f64.store (local.get $acc) (f64.add (f64.load (local.get $acc))
      (f64.add (local.get $sig1) (f64.add (f64x2.extract_lane 0 (local.get $sig)) (f64x2.extract_lane 1 (local.get $sig))))))
    (f64.store offset=8 (local.get $acc) (f64.add (f64.load offset=8 (local.get $acc))
      (f64.add (local.get $err1) (f64.add (f64x2.extract_lane 0 (local.get $err)) (f64x2.extract_lane 1 (local.get $err))))))
    (f64.store offset=16 (local.get $acc) (f64.max (f64.load offset=16 (local.get $acc))
      (f64.max (local.get $mx1) (f64.max (f64x2.extract_lane 0 (local.get $mx)) (f64x2.extract_lane 1 (local.get $mx)))))))

  ;; Error sums (as error_contig) of the rows quantize_rows quantized, with the
  ;; same row, block and parameter arguments; the bytes at $q.
  (func (export "error_rows") (param $in i32) (param $q i32) (param $n i32) (param $col i32) (param $rowLen i32)
                              (param $cb i32) (param $rb i32) (param $sp i32) (param $bp i32) (param $flip i32) (param $acc i32)
    (local $base i32) (local $seg i32) (local $c i32) (local $rem i32) (local $blk i32) (local $len i32) (local $at i32)
    (block $done
      (loop $rows
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (local.set $base (i32.load (local.get $rb)))
        (local.set $rb (i32.add (local.get $rb) (i32.const 4)))
        (local.set $seg (i32.sub (local.get $rowLen) (local.get $col)))
        (if (i32.gt_u (local.get $seg) (local.get $n)) (then (local.set $seg (local.get $n))))
        (if (i32.eq (local.get $cb) (i32.const 1))
          (then
            (local.set $at (i32.shl (i32.add (local.get $base) (local.get $col)) (i32.const 2)))
            (call $err_span (local.get $in) (local.get $q) (local.get $seg)
                            (i32.add (local.get $sp) (local.get $at)) (i32.add (local.get $bp) (local.get $at)) (i32.const 16)
                            (local.get $flip) (local.get $acc))
            (local.set $in (i32.add (local.get $in) (i32.shl (local.get $seg) (i32.const 2))))
            (local.set $q (i32.add (local.get $q) (local.get $seg))))
          (else
            (local.set $c (local.get $col))
            (local.set $rem (local.get $seg))
            (block $rdone
              (loop $runs
                (br_if $rdone (i32.eqz (local.get $rem)))
                (local.set $blk (i32.div_u (local.get $c) (local.get $cb)))
                (local.set $len (i32.sub (i32.mul (i32.add (local.get $blk) (i32.const 1)) (local.get $cb)) (local.get $c)))
                (if (i32.gt_u (local.get $len) (local.get $rem)) (then (local.set $len (local.get $rem))))
                (local.set $at (i32.shl (i32.add (local.get $base) (local.get $blk)) (i32.const 2)))
                (call $splat (i32.add (local.get $sp) (local.get $at)) (i32.add (local.get $bp) (local.get $at)))
                (call $err_span (local.get $in) (local.get $q) (local.get $len) (i32.const 0) (i32.const 64) (i32.const 0)
                                (local.get $flip) (local.get $acc))
                (local.set $in (i32.add (local.get $in) (i32.shl (local.get $len) (i32.const 2))))
                (local.set $q (i32.add (local.get $q) (local.get $len)))
                (local.set $c (i32.add (local.get $c) (local.get $len)))
                (local.set $rem (i32.sub (local.get $rem) (local.get $len)))
                (br $runs)))))
        (local.set $n (i32.sub (local.get $n) (local.get $seg)))
        (local.set $col (i32.const 0))
        (br $rows))))
)
