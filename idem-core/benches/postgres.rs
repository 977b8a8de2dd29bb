//! PostgreSQL benchmarks (placeholder until the paired loops land).

fn main() {}
