//! The in-memory filesystem tree every build goes through.
//!
//! Sources feed it — a directory walk ([`crate::dirwalk`]) or a parent
//! bootstrap ([`crate::parent`]) — and [`Tree::to_nodes`] flattens it into
//! the node list the bootstrap writer takes. Names ([`Entry`]) and inodes
//! ([`Inode`]) live in two arenas, so hard links are simply entries sharing
//! an inode, also across layers.
//!
//! An upper layer is merged onto a lower one with [`Tree::merge`], following
//! overlayfs semantics (spec §6.3): per directory, the upper layer's
//! whiteouts (and its opaque flag) are applied to the lower children first,
//! then its other entries replace or merge with the lower ones.
//!
//! Node order (which is also the layout and chunking order): the root, then
//! for each directory, taken depth-first in name order, all of its children
//! in name order. Children of one directory therefore get consecutive inode
//! numbers, as upstream's builder does.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use nydus_format::writer::{libc_ifmt, NodeSpec};

/// How whiteouts in the source are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutSpec {
    /// OCI `.wh.NAME` files delete `NAME` below, `.wh..wh..opq` makes the
    /// directory opaque; the whiteout files themselves are never kept.
    #[default]
    Oci,
    /// overlayfs 0/0 character devices delete, `trusted.overlay.opaque=y`
    /// makes a directory opaque. Without a parent layer they are kept as
    /// they are.
    Overlayfs,
    /// No whiteout processing: every entry is an ordinary entry.
    None,
}

/// OCI name prefix of a whiteout file.
pub const OCI_WHITEOUT_PREFIX: &[u8] = b".wh.";
/// OCI name of the opaque marker.
pub const OCI_OPAQUE: &[u8] = b".wh..wh..opq";
/// overlayfs xattr marking an opaque directory.
pub const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// One inode: its attributes, data chunks and where unchunked data comes
/// from.
#[derive(Debug, Clone, Default)]
pub struct Inode {
    /// Attributes, symlink target, xattrs and chunks. The name, parent,
    /// children, ino and link fields are filled in by [`Tree::to_nodes`].
    pub meta: NodeSpec,
    /// Source file of a regular file still to be chunked (`None` once its
    /// chunks are known, e.g. for an inode from a parent bootstrap).
    pub source: Option<PathBuf>,
}

impl Inode {
    /// Directory?
    pub fn is_dir(&self) -> bool {
        self.meta.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFDIR
    }

    /// Regular file?
    pub fn is_reg(&self) -> bool {
        self.meta.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFREG
    }
}

/// One name in the tree.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Name in the parent directory (empty for the root).
    pub name: Vec<u8>,
    /// Index into [`Tree::inodes`].
    pub inode: usize,
    /// Children by name (directories).
    pub children: BTreeMap<Vec<u8>, usize>,
    /// Names this layer deletes from the lower directory (upper layers).
    pub whiteouts: Vec<Vec<u8>>,
    /// This layer hides every lower child of the directory (upper layers).
    pub opaque: bool,
}

/// A filesystem tree; entry 0 is the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Names.
    pub entries: Vec<Entry>,
    /// Inodes.
    pub inodes: Vec<Inode>,
    /// Names whose xattrs were skipped because RAFS cannot store them.
    pub skipped_xattrs: u64,
}

/// A regular file whose data still has to be chunked.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Index into [`Tree::inodes`].
    pub inode: usize,
    /// Where to read the data.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

impl Tree {
    /// A tree holding only the root directory `root`.
    pub fn new(root: Inode) -> Self {
        Self { entries: vec![Entry::default()], inodes: vec![root], skipped_xattrs: 0 }
    }

    /// Add `inode` as a new inode and name it `name` in directory `parent`.
    pub fn add(&mut self, parent: usize, name: Vec<u8>, inode: Inode) -> usize {
        self.inodes.push(inode);
        self.link(parent, name, self.inodes.len() - 1)
    }

    /// Add a name for the existing inode `inode` in directory `parent`.
    pub fn link(&mut self, parent: usize, name: Vec<u8>, inode: usize) -> usize {
        let idx = self.entries.len();
        self.entries.push(Entry { name: name.clone(), inode, ..Default::default() });
        self.entries[parent].children.insert(name, idx);
        idx
    }

    /// The inode of entry `e`.
    pub fn inode_of(&self, e: usize) -> &Inode {
        &self.inodes[self.entries[e].inode]
    }

    /// Entries reachable from the root in node order, each with the index of
    /// its parent in that order.
    fn order(&self) -> Vec<(usize, usize)> {
        let mut out = vec![(0usize, 0usize)];
        let mut stack = vec![0usize];
        while let Some(d) = stack.pop() {
            let entry = out[d].0;
            let mut subdirs = Vec::new();
            for &c in self.entries[entry].children.values() {
                if self.inode_of(c).is_dir() {
                    subdirs.push(out.len());
                }
                out.push((c, d));
            }
            stack.extend(subdirs.into_iter().rev());
        }
        out
    }

    /// Flatten into writer nodes (node 0 is the root). The first name of an
    /// inode in node order holds it; its other names link to that node.
    pub fn to_nodes(&self) -> Vec<NodeSpec> {
        let order = self.order();
        let mut first: HashMap<usize, usize> = HashMap::new();
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(order.len());
        for (idx, &(e, parent)) in order.iter().enumerate() {
            let entry = &self.entries[e];
            let holder = *first.entry(entry.inode).or_insert(idx);
            let mut n = self.inodes[entry.inode].meta.clone();
            n.name = if idx == 0 { Vec::new() } else { entry.name.clone() };
            n.parent = parent;
            n.children = Vec::new();
            n.ino = holder as u32 + 1;
            if holder != idx {
                n.link_to = Some(holder);
                n.chunks = Vec::new();
            } else {
                n.link_to = None;
            }
            if idx > 0 {
                nodes[parent].children.push(idx);
            }
            nodes.push(n);
        }
        nodes
    }

    /// Regular files still to be chunked, once per inode, in node order.
    pub fn data_files(&self) -> Vec<DataFile> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (e, _) in self.order() {
            let i = self.entries[e].inode;
            let ino = &self.inodes[i];
            if let Some(path) = &ino.source {
                if ino.is_reg() && ino.meta.size > 0 && seen.insert(i) {
                    out.push(DataFile { inode: i, path: path.clone(), size: ino.meta.size });
                }
            }
        }
        out
    }

    /// Copy inode `u` of `upper` into this tree (once per upper inode, so
    /// hard links inside the upper layer stay shared).
    fn import_inode(&mut self, upper: &Tree, u: usize, remap: &mut HashMap<usize, usize>) -> usize {
        *remap.entry(u).or_insert_with(|| {
            self.inodes.push(upper.inodes[u].clone());
            self.inodes.len() - 1
        })
    }

    /// Copy the subtree of upper entry `u` into this tree as a new entry
    /// (not yet linked into a directory). Whiteouts inside it have nothing
    /// below them and are dropped.
    fn import_subtree(&mut self, upper: &Tree, u: usize, remap: &mut HashMap<usize, usize>) -> usize {
        let root = self.entries.len();
        let inode = self.import_inode(upper, upper.entries[u].inode, remap);
        self.entries.push(Entry { name: upper.entries[u].name.clone(), inode, ..Default::default() });
        let mut stack = vec![(root, u)];
        while let Some((mine, theirs)) = stack.pop() {
            for (name, &uc) in &upper.entries[theirs].children {
                let inode = self.import_inode(upper, upper.entries[uc].inode, remap);
                let idx = self.link(mine, name.clone(), inode);
                stack.push((idx, uc));
            }
        }
        root
    }

    /// Merge `upper` (one layer, whiteouts recorded in its entries) onto
    /// this tree with overlayfs semantics. The root's attributes always come
    /// from the upper layer.
    pub fn merge(&mut self, upper: &Tree) {
        let mut remap = HashMap::new();
        self.entries[0].inode = self.import_inode(upper, upper.entries[0].inode, &mut remap);
        let mut stack = vec![(0usize, 0usize)];
        while let Some((lower, u)) = stack.pop() {
            let ue = &upper.entries[u];
            if ue.opaque {
                self.entries[lower].children.clear();
            }
            for w in &ue.whiteouts {
                self.entries[lower].children.remove(w);
            }
            for (name, &uc) in &ue.children {
                let existing = self.entries[lower].children.get(name).copied();
                match existing {
                    Some(lc) if upper.inode_of(uc).is_dir() && self.inode_of(lc).is_dir() => {
                        self.entries[lc].inode = self.import_inode(upper, upper.entries[uc].inode, &mut remap);
                        stack.push((lc, uc));
                    }
                    _ => {
                        let new = self.import_subtree(upper, uc, &mut remap);
                        self.entries[lower].children.insert(name.clone(), new);
                    }
                }
            }
        }
    }
}

impl Tree {
    /// Turn whiteout *entries* of a layer loaded from a bootstrap (built
    /// with `--whiteout-spec none`, so its whiteouts are ordinary entries)
    /// into recorded whiteouts and opaque flags per `spec`, as a directory
    /// walk of the layer would have recorded them. Returns how many entries
    /// were whiteouts or opaque markers.
    pub fn take_whiteouts(&mut self, spec: WhiteoutSpec) -> u64 {
        let mut n = 0;
        let mut stack = vec![0usize];
        while let Some(d) = stack.pop() {
            if spec == WhiteoutSpec::Overlayfs && self.take_overlay_opaque(d) {
                self.entries[d].opaque = true;
                n += 1;
            }
            let children: Vec<(Vec<u8>, usize)> =
                self.entries[d].children.iter().map(|(k, v)| (k.clone(), *v)).collect();
            for (name, c) in children {
                let meta = &self.inode_of(c).meta;
                let kind = match spec {
                    WhiteoutSpec::Oci if name == OCI_OPAQUE => Some(None),
                    WhiteoutSpec::Oci => name.strip_prefix(OCI_WHITEOUT_PREFIX).map(|t| Some(t.to_vec())),
                    WhiteoutSpec::Overlayfs
                        if meta.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFCHR && meta.rdev == (0, 0) =>
                    {
                        Some(Some(name.clone()))
                    }
                    _ => None,
                };
                match kind {
                    Some(target) => {
                        n += 1;
                        self.entries[d].children.remove(&name);
                        match target {
                            None => self.entries[d].opaque = true,
                            Some(t) if !t.is_empty() => self.entries[d].whiteouts.push(t),
                            Some(_) => {}
                        }
                    }
                    None if self.inode_of(c).is_dir() => stack.push(c),
                    None => {}
                }
            }
        }
        n
    }

    /// Remove `trusted.overlay.opaque=y` from directory entry `d`'s inode;
    /// whether it was set.
    fn take_overlay_opaque(&mut self, d: usize) -> bool {
        let x = &mut self.inodes[self.entries[d].inode].meta.xattrs;
        let before = x.len();
        x.retain(|(k, v)| !(k == OVERLAY_OPAQUE_XATTR && v == b"y"));
        x.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Inode {
        Inode { meta: NodeSpec { mode: libc_ifmt::S_IFDIR | 0o755, ..Default::default() }, source: None }
    }

    fn file(size: u64) -> Inode {
        Inode { meta: NodeSpec { mode: libc_ifmt::S_IFREG | 0o644, size, ..Default::default() }, source: None }
    }

    fn names(t: &Tree) -> Vec<String> {
        let nodes = t.to_nodes();
        let path = |mut i: usize| {
            let mut parts = Vec::new();
            while i != 0 {
                parts.push(String::from_utf8_lossy(&nodes[i].name).into_owned());
                i = nodes[i].parent;
            }
            parts.reverse();
            parts.join("/")
        };
        (1..nodes.len()).map(path).collect()
    }

    #[test]
    fn merge_follows_overlay_rules() {
        let mut lower = Tree::new(dir());
        let a = lower.add(0, b"a".to_vec(), dir());
        lower.add(a, b"x".to_vec(), file(1));
        lower.add(a, b"y".to_vec(), file(1));
        let o = lower.add(0, b"o".to_vec(), dir());
        lower.add(o, b"old".to_vec(), file(1));
        let f = lower.add(0, b"f".to_vec(), file(1));
        let shared = lower.entries[f].inode;
        lower.link(0, b"g".to_vec(), shared);
        lower.add(0, b"gone".to_vec(), dir());

        let mut upper = Tree::new(dir());
        let ua = upper.add(0, b"a".to_vec(), dir());
        upper.entries[ua].whiteouts.push(b"x".to_vec());
        upper.add(ua, b"z".to_vec(), file(2));
        let uo = upper.add(0, b"o".to_vec(), dir());
        upper.entries[uo].opaque = true;
        upper.add(uo, b"new".to_vec(), file(2));
        upper.add(0, b"f".to_vec(), dir());
        upper.entries[0].whiteouts.push(b"gone".to_vec());

        lower.merge(&upper);
        assert_eq!(names(&lower), ["a", "f", "g", "o", "a/y", "a/z", "o/new"]);
        let nodes = lower.to_nodes();
        // g keeps the lower inode it shared with the replaced f.
        assert!(nodes[3].link_to.is_none());
        assert_eq!(nodes[3].mode & libc_ifmt::S_IFMT, libc_ifmt::S_IFREG);
        assert_eq!(nodes[2].mode & libc_ifmt::S_IFMT, libc_ifmt::S_IFDIR);
    }

    #[test]
    fn hard_links_share_the_first_node() {
        let mut t = Tree::new(dir());
        let f = t.add(0, b"b".to_vec(), file(3));
        let ino = t.entries[f].inode;
        t.link(0, b"a".to_vec(), ino);
        let nodes = t.to_nodes();
        assert_eq!(nodes[1].name, b"a");
        assert_eq!(nodes[1].link_to, None);
        assert_eq!(nodes[2].link_to, Some(1));
        assert_eq!(nodes[2].ino, nodes[1].ino);
        assert_eq!(nodes[0].children, [1, 2]);
    }

    #[test]
    fn whiteout_entries_become_whiteouts() {
        let mut t = Tree::new(dir());
        let a = t.add(0, b"a".to_vec(), dir());
        t.add(a, b".wh..wh..opq".to_vec(), file(0));
        t.add(a, b"keep".to_vec(), file(1));
        t.add(0, b".wh.gone".to_vec(), file(0));
        let mut chr = file(0);
        chr.meta.mode = libc_ifmt::S_IFCHR;
        t.add(0, b"dev".to_vec(), chr.clone());
        let mut oci = t.clone();
        assert_eq!(oci.take_whiteouts(WhiteoutSpec::Oci), 2);
        assert_eq!(names(&oci), ["a", "dev", "a/keep"]);
        assert!(oci.entries[a].opaque);
        assert_eq!(oci.entries[0].whiteouts, [b"gone".to_vec()]);
        let mut ovl = t.clone();
        assert_eq!(ovl.take_whiteouts(WhiteoutSpec::Overlayfs), 1);
        assert_eq!(ovl.entries[0].whiteouts, [b"dev".to_vec()]);
        assert_eq!(t.clone().take_whiteouts(WhiteoutSpec::None), 0);
    }
}
