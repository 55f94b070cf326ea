//! Rebuilds the crate when a migration is added or edited:
//! `refinery::embed_migrations!` reads `migrations/` at compile time, which
//! cargo cannot see by itself, so a new migration file was left out of the
//! binary until some Rust source changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
