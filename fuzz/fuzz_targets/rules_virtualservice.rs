//! VirtualService objects built from the field names the rules read (or JSON text seeded from real
//! manifests), through `review::admit` via a whole review for both endpoints.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((settings, object)) = divert_webhook_fuzz::kind_object(
        data,
        &["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"],
        "VirtualService",
    ) else {
        return;
    };
    divert_webhook_fuzz::check_review_both(&divert_webhook_fuzz::review_of(&object), &settings);
});
