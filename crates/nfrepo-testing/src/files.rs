//! Small file trees for tests of sources and of the binary.

use std::path::Path;

/// Writes each `(relative path, contents)` under `root`, creating `root`
/// and every parent directory on the way.
///
/// # Errors
/// The first I/O error.
pub fn write_tree<C: AsRef<[u8]>>(root: &Path, files: &[(&str, C)]) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    for (rel, contents) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_files() {
        let dir = std::env::temp_dir().join(format!("nfrepo-testing-tree-{}", std::process::id()));
        write_tree(&dir, &[("a", "1"), ("b/c/d.txt", "22")]).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(dir.join("b/c/d.txt")).unwrap(), b"22");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
