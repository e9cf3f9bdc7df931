//! The FUSE file system: fuser's callbacks, each answered from a task on
//! the caller's tokio runtime (fuser's threads never block on I/O).
//!
//! Every answer comes from the current [`View`] (the reader and the layout,
//! replaced whole on a refresh) and the inode table. Errors reading the
//! repository are logged with the path and the error's code and answered
//! with `EIO`; nothing unverified is ever returned.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use nfrepo_engine::{Operation, Reader, SnapshotEntry};
use nfrepo_format::{Node, NodeKind, Tree};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::cache::ChunkCache;
use crate::file::{MAX_PIPES, OpenFile};
use crate::inodes::{Kind, Table};
use nfrepo_engine::{Layout, LayoutEntry};

/// How long the kernel may cache what the layout shows (it changes on refresh).
const LAYOUT_TTL: Duration = Duration::from_secs(1);
/// How long the kernel may cache a snapshot's entries (they never change).
const NODE_TTL: Duration = Duration::from_secs(300);
/// Read-ahead the kernel is asked for.
const KERNEL_READAHEAD: u32 = 1 << 20;

/// What the mount shows: a reader over the index and the layout of the
/// snapshots it was loaded with.
pub(crate) struct View {
    pub(crate) reader: Reader,
    pub(crate) layout: Layout,
}

/// A failure answered to the kernel: the errno, and for repository
/// errors the error to log.
enum Failure {
    Errno(Errno),
    Engine(nfrepo_engine::Error),
}

impl From<nfrepo_engine::Error> for Failure {
    fn from(e: nfrepo_engine::Error) -> Self {
        Self::Engine(e)
    }
}

type Answer<T> = Result<T, Failure>;

pub(crate) struct Shared {
    view: RwLock<Arc<View>>,
    table: Mutex<Table>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    cache: Arc<ChunkCache>,
    pipes: Arc<Semaphore>,
    uid: u32,
    gid: u32,
}

impl Shared {
    pub(crate) fn new(view: View, cache_bytes: u64) -> Self {
        Self {
            view: RwLock::new(Arc::new(view)),
            table: Mutex::new(Table::new()),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            cache: Arc::new(ChunkCache::new(cache_bytes)),
            pipes: Arc::new(Semaphore::new(MAX_PIPES)),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    pub(crate) fn view(&self) -> Arc<View> {
        self.view.read().map_or_else(|e| e.into_inner().clone(), |v| v.clone())
    }

    pub(crate) fn replace(&self, view: View) {
        match self.view.write() {
            Ok(mut current) => *current = Arc::new(view),
            Err(e) => *e.into_inner() = Arc::new(view),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn inode(&self, ino: u64) -> Answer<(Kind, u64, Arc<str>)> {
        self.table().get(ino).ok_or(Failure::Errno(Errno::ENOENT))
    }

    /// A directory's entries.
    async fn listing(&self, view: &View, kind: &Kind) -> Answer<Listing> {
        match kind {
            Kind::Layout(path) => match view.layout.get(path) {
                Some(LayoutEntry::Dir(children)) => Ok(Listing::Layout(
                    children
                        .iter()
                        .map(|(name, child)| (name.clone(), layout_type(child)))
                        .collect(),
                )),
                Some(LayoutEntry::Snapshot(snapshot)) => {
                    let tree = view.reader.tree(&snapshot.snapshot.root).await?;
                    Ok(Listing::Tree(snapshot.clone(), tree))
                }
                Some(LayoutEntry::Link(_)) => Err(Failure::Errno(Errno::ENOTDIR)),
                None => Err(Failure::Errno(Errno::ENOENT)),
            },
            Kind::Node { snapshot, .. } => match kind.node().map(|n| &n.kind) {
                Some(NodeKind::Dir { tree }) => Ok(Listing::Tree(snapshot.clone(), view.reader.tree(tree).await?)),
                _ => Err(Failure::Errno(Errno::ENOTDIR)),
            },
        }
    }

    fn attr(&self, view: &View, ino: u64, kind: &Kind) -> Answer<(FileAttr, Duration)> {
        let dir = |mtime_ns: i64| self.plain(ino, FileType::Directory, 0o555, 0, mtime_ns);
        match kind {
            Kind::Layout(path) => match view.layout.get(path) {
                Some(LayoutEntry::Dir(_)) => Ok((dir(view.layout.newest_ns()), LAYOUT_TTL)),
                Some(LayoutEntry::Snapshot(s)) => Ok((dir(s.snapshot.time_ns), LAYOUT_TTL)),
                Some(LayoutEntry::Link(target)) => Ok((
                    self.plain(
                        ino,
                        FileType::Symlink,
                        0o777,
                        target.len() as u64,
                        view.layout.newest_ns(),
                    ),
                    LAYOUT_TTL,
                )),
                None => Err(Failure::Errno(Errno::ENOENT)),
            },
            Kind::Node { .. } => {
                let node = kind.node().ok_or(Failure::Errno(Errno::ENOENT))?;
                Ok((node_attr(ino, node), NODE_TTL))
            }
        }
    }

    fn plain(&self, ino: u64, kind: FileType, perm: u16, size: u64, mtime_ns: i64) -> FileAttr {
        let time = system_time(mtime_ns);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    async fn lookup(&self, parent: u64, name: &[u8]) -> Answer<(FileAttr, Duration)> {
        let view = self.view();
        let (kind, _, _) = self.inode(parent)?;
        let child = match self.listing(&view, &kind).await? {
            Listing::Layout(_) => {
                let Kind::Layout(path) = &kind else {
                    return Err(Failure::Errno(Errno::ENOENT));
                };
                let mut path = path.clone();
                path.push(name.to_vec());
                if view.layout.get(&path).is_none() {
                    return Err(Failure::Errno(Errno::ENOENT));
                }
                Kind::Layout(path)
            }
            Listing::Tree(snapshot, tree) => {
                let index = tree
                    .nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .map_err(|_| Failure::Errno(Errno::ENOENT))?;
                Kind::Node { snapshot, tree, index }
            }
        };
        let ino = self.table().lookup(parent, name, child.clone());
        self.attr(&view, ino, &child)
    }

    async fn readdir(&self, ino: u64, offset: u64, reply: &mut ReplyDirectory) -> Answer<()> {
        let view = self.view();
        let (kind, parent, _) = self.inode(ino)?;
        let entries: Vec<(Vec<u8>, FileType)> = match self.listing(&view, &kind).await? {
            Listing::Layout(entries) => entries,
            Listing::Tree(_, tree) => tree.nodes.iter().map(|n| (n.name.clone(), node_type(n))).collect(),
        };
        let dots = [
            (ino, b".".to_vec(), FileType::Directory),
            (parent, b"..".to_vec(), FileType::Directory),
        ];
        let table = self.table();
        let all = dots.into_iter().chain(entries.into_iter().map(|(name, kind)| {
            // An entry not looked up yet has no number: the kernel ignores
            // a directory entry's inode, so any non-zero one will do.
            let child = table.known(ino, &name).unwrap_or(u64::MAX);
            (child, name, kind)
        }));
        for (i, (child, name, kind)) in all.enumerate().skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        Ok(())
    }

    fn readlink(&self, ino: u64) -> Answer<Vec<u8>> {
        let view = self.view();
        let (kind, _, _) = self.inode(ino)?;
        match &kind {
            Kind::Layout(path) => match view.layout.get(path) {
                Some(LayoutEntry::Link(target)) => Ok(target.clone()),
                Some(_) => Err(Failure::Errno(Errno::EINVAL)),
                None => Err(Failure::Errno(Errno::ENOENT)),
            },
            Kind::Node { .. } => match kind.node().map(|n| &n.kind) {
                Some(NodeKind::Symlink { target }) => Ok(target.clone()),
                _ => Err(Failure::Errno(Errno::EINVAL)),
            },
        }
    }

    fn open(&self, ino: u64, flags: OpenFlags) -> Answer<u64> {
        if !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) {
            return Err(Failure::Errno(Errno::EROFS));
        }
        let (kind, _, _) = self.inode(ino)?;
        let Some(NodeKind::File { size, content, .. }) = kind.node().map(|n| &n.kind) else {
            return Err(Failure::Errno(match kind {
                Kind::Layout(_) => Errno::EISDIR,
                Kind::Node { .. } => Errno::EINVAL,
            }));
        };
        let file = OpenFile::new(
            self.view().reader.clone(),
            content.clone(),
            *size,
            self.cache.clone(),
            self.pipes.clone(),
        );
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(fh, Arc::new(file));
        Ok(fh)
    }

    fn xattrs(&self, ino: u64) -> Answer<Vec<nfrepo_format::Xattr>> {
        let (kind, _, _) = self.inode(ino)?;
        Ok(kind.node().map(|n| n.meta.xattrs.clone()).unwrap_or_default())
    }

    /// Logs a failure met at `ino` and gives its errno.
    fn errno(&self, ino: u64, what: &str, failure: Failure) -> Errno {
        match failure {
            Failure::Errno(errno) => errno,
            Failure::Engine(e) => {
                let path = self
                    .table()
                    .get(ino)
                    .map_or_else(|| format!("inode {ino}"), |(_, _, p)| p.to_string());
                tracing::error!(path, code = %e.code(Operation::Restore), "{what} failed: {e}");
                Errno::EIO
            }
        }
    }
}

enum Listing {
    Layout(Vec<(Vec<u8>, FileType)>),
    Tree(Arc<SnapshotEntry>, Arc<Tree>),
}

fn layout_type(entry: &LayoutEntry) -> FileType {
    match entry {
        LayoutEntry::Link(_) => FileType::Symlink,
        LayoutEntry::Dir(_) | LayoutEntry::Snapshot(_) => FileType::Directory,
    }
}

fn node_type(node: &Node) -> FileType {
    match node.kind {
        NodeKind::Dir { .. } => FileType::Directory,
        NodeKind::Symlink { .. } => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice { .. } => FileType::CharDevice,
        NodeKind::BlockDevice { .. } => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn system_time(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

/// A snapshot node's attributes, as recorded.
fn node_attr(ino: u64, node: &Node) -> FileAttr {
    let size = match &node.kind {
        NodeKind::Symlink { target } => target.len() as u64,
        _ => node.size(),
    };
    let rdev = match node.kind {
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => u32::try_from(rdev).unwrap_or(0),
        _ => 0,
    };
    let mtime = system_time(node.meta.mtime_ns);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: system_time(node.meta.ctime_ns),
        crtime: mtime,
        kind: node_type(node),
        perm: u16::try_from(node.meta.mode & 0o7777).unwrap_or(0),
        nlink: 1,
        uid: node.meta.uid,
        gid: node.meta.gid,
        rdev,
        blksize: 128 * 1024,
        flags: 0,
    }
}

/// fuser's side: each callback runs as a task on `runtime`.
pub(crate) struct Fs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) runtime: Handle,
}

impl Fs {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, job: impl FnOnce(Arc<Shared>) -> F) {
        self.runtime.spawn(job(self.shared.clone()));
    }
}

fn reply_xattr(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(u32::try_from(data.len()).unwrap_or(u32::MAX));
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl fuser::Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(KERNEL_READAHEAD);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.spawn(|shared| async move {
            match shared.lookup(parent.0, &name).await {
                Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(shared.errno(parent.0, "lookup", e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.table().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let shared = &self.shared;
        let answer = shared
            .inode(ino.0)
            .and_then(|(kind, _, _)| shared.attr(&shared.view(), ino.0, &kind));
        match answer {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(shared.errno(ino.0, "getattr", e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.shared.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.shared.errno(ino.0, "readlink", e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.open(ino.0, flags) {
            // Snapshot content never changes: the page cache may keep it across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(self.shared.errno(ino.0, "open", e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = self
            .shared
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&fh.0)
            .cloned();
        let Some(file) = file else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn(|shared| async move {
            match file.read(offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(shared.errno(ino.0, &format!("read at offset {offset}"), Failure::Engine(e))),
            }
        });
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: fuser::ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.shared
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh.0);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.spawn(|shared| async move {
            match shared.readdir(ino.0, offset, &mut reply).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(shared.errno(ino.0, "readdir", e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.shared.xattrs(ino.0) {
            Ok(xattrs) => match xattrs.iter().find(|x| x.name == name.as_bytes()) {
                Some(x) => reply_xattr(reply, &x.value, size),
                None => reply.error(Errno::ENODATA),
            },
            Err(e) => reply.error(self.shared.errno(ino.0, "getxattr", e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.shared.xattrs(ino.0) {
            Ok(xattrs) => {
                let mut names = Vec::new();
                for x in &xattrs {
                    names.extend_from_slice(&x.name);
                    names.push(0);
                }
                reply_xattr(reply, &names, size);
            }
            Err(e) => reply.error(self.shared.errno(ino.0, "listxattr", e)),
        }
    }
}
