//! Cluster awareness (SPEC §10): what the webhook knows about the cluster besides the admitted
//! object.
//!
//! - [`view`]: the read-only [`ClusterView`] the rules take (namespace labels, Service names per
//!   namespace); [`ClusterView::none`] when there is no cluster, and then every rule behaves as
//!   in SPEC §1–§9.
//! - [`state`]: the cluster's state the reconciler decides from, read from a `kubectl get -o yaml`
//!   dump (SPEC §10.9).
//! - [`http_routes`]: the reconciler's decision for HTTPRoutes (SPEC §11): the developer routes
//!   and ReferenceGrants it owns, and the writes that keep them.
//! - [`reconcile`]: the reconciler's decision (SPEC §10.2, §10.3, §10.5), a pure function from the
//!   state to annotation changes; [`http_routes`] the developer routes and ReferenceGrants of §11.
//!
//! - [`access`] and [`caches`]: the edges that read the cluster: whether `serve` has one
//!   (in-cluster or kubeconfig), and the watch caches that publish [`ClusterSnapshot`]s.
//! - [`writer`]: the only code that changes objects (server-side apply, JSON patch, §10.6);
//! - [`lease`]: the Lease `divert-webhook` that decides which replica writes (§10.7);
//! - [`reconciler`]: the loop that plans from each snapshot and hands the changes to the writer.
//!
//! Everything else here is pure data and pure functions: where the state comes from (a dump file
//! read by the CLI, the watch caches) is the caller's business.

pub mod access;
pub mod caches;
pub mod http_routes;
pub mod lease;
pub mod reconcile;
pub mod reconciler;
pub mod snapshot;
pub mod state;
pub mod view;
pub mod writer;

pub use snapshot::ClusterSnapshot;
pub use view::ClusterView;
