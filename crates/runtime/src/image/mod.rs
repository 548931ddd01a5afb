//! The node's image store: content-addressed blobs, layer unpacking, and archive import.
//!
//! This is the storage half of the runtime's image service. It knows nothing about registries
//! or containers; pulls and the CRI `ImageService` build on it.

pub mod archive;
pub mod blobs;
pub mod layer;
pub mod pull;

/// Where a node keeps its images: `<data-dir>/agent/images`.
pub fn images_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("agent").join("images")
}

/// The registry configuration of a node: `<data-dir>/registries.yaml` (k3s's format).
pub fn registries_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("registries.yaml")
}

/// Bytes and inodes used under `root` (what CRI's `ImageFsInfo` reports).
pub fn disk_usage(root: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    Ok((bytes, inodes))
}
