//! The `eventbus` binary. All of it lives in [`eventbus_server::cli`].

/// mimalloc instead of glibc's malloc: per-thread free lists make the
/// many small, short-lived allocations of the publish and delivery paths
/// (protobuf strings, `Bytes` headers, boxed futures) cheaper, and it does
/// not stall in `malloc_consolidate` (profile in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    eventbus_server::cli::main()
}
