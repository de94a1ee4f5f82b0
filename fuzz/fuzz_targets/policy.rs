//! Arbitrary bytes as a policy file: the parser (YAML, positions, periods, conditions,
//! strategies, the cross-policy checks) must answer with diagnostics, never panic, hang or
//! exhaust memory. Seeds: the bad-input corpus (`tests/corpus/*/policies/*.yaml`) and the
//! example policies. Run with `scripts/fuzz.sh [seconds]`.

#![no_main]

use std::path::Path;

use lapse::diag::Diagnostics;
use lapse::policy::{check_set, load_bytes, PolicySet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut set = PolicySet::default();
    let mut diags = Diagnostics::default();
    // Each input as one file, and twice (a second file exercises duplicate names and conflicts).
    load_bytes(Path::new("policies/fuzz.yaml"), data.to_vec(), &mut set, &mut diags);
    load_bytes(Path::new("policies/fuzz2.yaml"), data.to_vec(), &mut set, &mut diags);
    check_set(&mut set, &mut diags);
    // Rendering must not panic either (clipping of long values, positions).
    for d in &diags.0 {
        let _ = d.to_string();
    }
});
