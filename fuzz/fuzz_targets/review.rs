//! Arbitrary bytes as an AdmissionReview body, through both endpoints (SPEC §8). The first byte
//! picks the settings (driver, legacy header, selector); the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    divert_webhook_fuzz::check_review_both(body, &divert_webhook_fuzz::settings(first));
});
