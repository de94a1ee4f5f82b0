//! Arbitrary bytes as a worker config and as a holds file: both loaders must answer with
//! diagnostics, never panic, hang or exhaust memory. They read files, so each input is written
//! to a scratch file first. Run with `FUZZ_TARGET=config_holds scripts/fuzz.sh [seconds]`.

#![no_main]

use lapse::diag::Diagnostics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("lapse-fuzz-{}.yaml", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mut diags = Diagnostics::default();
    let _ = lapse::config::Config::load(&path, &mut diags);
    let _ = lapse::holds::load(&path, &mut diags);
    for d in &diags.0 {
        let _ = d.to_string();
    }
});
