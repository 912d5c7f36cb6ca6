//! Copies the guest agent's initdata module (without its unit tests, which need the
//! rest of the agent crate) so the digest test compiles the agent's real code
//! without building the whole agent (ttrpc, regorus, the TPM stack) for it.
fn main() {
    let src = "../agent/src/initdata.rs";
    println!("cargo::rerun-if-changed={src}");
    let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    // Inner doc comments (`//!`) are not allowed inside `include!`d items.
    let body: String = text[..cut]
        .lines()
        .filter(|l| !l.starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_default())
        .join("agent_initdata.rs");
    std::fs::write(&out, body).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
