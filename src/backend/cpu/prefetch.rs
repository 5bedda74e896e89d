//! Prefetching the weights a product reads next, spread over the calls that read the current
//! ones. A multi-row product applies each panel (or pair of panels) to its input rows in
//! several kernel calls; only the first call's loads miss, so a prefetch a fixed distance
//! ahead of the loads asks for the next panel's whole bytes inside one call, faster than one
//! core's share of the memory bandwidth, while the later calls ask for nothing. Here call `c`
//! of `C` fetches the `c`-th of `C` equal parts of the next panel, evenly over its own loop,
//! so the memory stream runs at one steady rate across all calls (measured in
//! docs/PERFORMANCE.md, "CPU: continuous batching").

/// Where one kernel call prefetches: a part of the next panel (or of both next panels of a
/// pair), walked in equal steps, one per iteration of the call's loop.
pub(super) struct NextPanels {
    /// First byte of this call's part of the next panel.
    base: *const u8,
    /// Bytes from the next panel to the one after it (the second of a pair), or 0.
    second: usize,
    /// Position in the part, in 1/65536 bytes.
    pos: usize,
    /// Advance per step, in 1/65536 bytes.
    step: usize,
}

impl NextPanels {
    /// The prefetches of call `share.0` of `share.1` that apply one panel (of `panel_bytes`
    /// bytes) in `steps` loop iterations, where `next` is the first byte of the panel that
    /// the task reads after this one; with `pair`, the panel after `next` (the second of the
    /// next pair) is fetched alike. Pointers past the weights are never dereferenced: a
    /// prefetch does not fault.
    pub(super) fn new(
        next: *const u8,
        panel_bytes: usize,
        steps: usize,
        share: (usize, usize),
        pair: bool,
    ) -> Self {
        let (call, calls) = (share.0, share.1.max(1));
        let part = panel_bytes.div_ceil(calls);
        NextPanels {
            base: next.wrapping_add(call.min(calls) * part),
            second: if pair { panel_bytes } else { 0 },
            pos: 0,
            step: (part << 16) / steps.max(1),
        }
    }

    /// Prefetches into L2 every line from the current position up to the next step's (at
    /// least one; and their twins in the second panel of a pair), then advances one step.
    #[inline(always)]
    pub(super) fn step(&mut self) {
        self.advance(|at| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch is a hint that never faults, whatever the address.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                _mm_prefetch::<_MM_HINT_T1>(at as *const i8);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = at;
        })
    }

    /// One step: `fetch` of each address [`NextPanels::step`] prefetches.
    #[inline(always)]
    fn advance(&mut self, mut fetch: impl FnMut(*const u8)) {
        let end = (self.pos + self.step) >> 16;
        let mut at = self.pos >> 16;
        loop {
            let line = self.base.wrapping_add(at);
            fetch(line);
            if self.second != 0 {
                fetch(line.wrapping_add(self.second));
            }
            at += 64;
            if at >= end {
                break;
            }
        }
        self.pos += self.step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The addresses each call's steps prefetch, relative to the next panel.
    fn visited(panel_bytes: usize, steps: usize, share: (usize, usize)) -> Vec<usize> {
        let next = 4096usize as *const u8;
        let mut p = NextPanels::new(next, panel_bytes, steps, share, false);
        let mut all = Vec::new();
        for _ in 0..steps {
            p.advance(|at| all.push(at as usize - 4096));
        }
        all
    }

    #[test]
    fn the_calls_of_a_panel_together_visit_every_line_of_the_next_one_in_order() {
        for (panel_bytes, steps) in [
            (18432, 288),
            (36864, 576),
            (4608, 72),
            (9216, 144),
            (9216, 18),
            (2304, 18),
        ] {
            for calls in 1..=11 {
                let mut all = Vec::new();
                for c in 0..calls {
                    all.extend(visited(panel_bytes, steps, (c, calls)));
                }
                assert!(
                    all.windows(2).all(|w| w[0] <= w[1]),
                    "{panel_bytes} by {calls}"
                );
                assert!(
                    all.iter().all(|&a| a < panel_bytes + 64),
                    "{panel_bytes} by {calls}"
                );
                let lines: std::collections::BTreeSet<usize> = all.iter().map(|a| a / 64).collect();
                for line in 0..panel_bytes / 64 {
                    assert!(
                        lines.contains(&line),
                        "{panel_bytes} by {calls}: line {line}"
                    );
                }
            }
        }
    }
}
