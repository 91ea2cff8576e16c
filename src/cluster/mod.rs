//! Cluster awareness (SPEC §10): what the webhook knows about the cluster besides the admitted
//! object.
//!
//! - [`view`]: the read-only [`ClusterView`] the rules take (namespace labels, Service names per
//!   namespace); [`ClusterView::none`] when there is no cluster, and then every rule behaves as
//!   in SPEC §1–§9.
//!
//! Everything here is pure data and pure functions: where the state comes from (a dump file
//! read by the CLI) is the caller's business.

pub mod view;

pub use view::ClusterView;
