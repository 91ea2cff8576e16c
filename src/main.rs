use std::process::ExitCode;

// mimalloc for the small blocks a review's tree is made of, glibc for the large buffers
// (src/allocator.rs says why).
#[global_allocator]
static ALLOCATOR: divert_webhook::allocator::SplitAllocator = divert_webhook::allocator::SplitAllocator;

fn main() -> ExitCode {
    divert_webhook::cli::run(divert_webhook::cli::parse())
}
