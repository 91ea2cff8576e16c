//! divert-webhook: a Kubernetes mutating + validating admission webhook that wires namespaces
//! into the mesh and rewrites routes for divert (see SPEC and README).
//!
//! Layout: [`rules`] (pure, one module per kind) ← [`review`] (AdmissionReview in/out) ←
//! edges: [`server`] (HTTPS + metrics), [`manifests`] (offline `mutate`/`check`).

pub mod allocator;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod deadline;
pub mod manifests;
pub mod patch;
pub mod re2;
pub mod review;
pub mod rules;
pub mod selector;
pub mod server;
pub mod settings;

// The unit tests run on the binary's allocator too.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: allocator::SplitAllocator = allocator::SplitAllocator;
