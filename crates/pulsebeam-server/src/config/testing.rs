//! What the sections' tests share: a minimal valid file and the key an error names.

use super::Config;

pub(super) const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
// RFC 8032 test 2's public key.
pub(super) const KEY2: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

pub(super) fn base() -> String {
    format!("[[projects]]\nid = \"p\"\n[[projects.keys]]\nkid = \"kid_0000000000000001\"\npublic_key = \"{KEY}\"\n")
}

pub(super) fn key_of(text: &str) -> Option<String> {
    Config::from_toml_str(text)
        .err()
        .and_then(|e| e.key().map(str::to_owned))
}
