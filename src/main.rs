use std::process::ExitCode;

// Every review builds and drops a tree of small allocations (one per JSON value and key):
// mimalloc serves them at a fraction of glibc malloc's cost (BENCHMARKS.md, "Allocation").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    divert_webhook::cli::run(divert_webhook::cli::parse())
}
