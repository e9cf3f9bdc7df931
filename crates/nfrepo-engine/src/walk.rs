//! The one tree walker: every walk over snapshot trees (gc, check, repair,
//! `ls`, restore planning, `verify`) runs on [`walk`] with a [`Visitor`].
//!
//! **Order.** The walk is depth-first in stored (name) order: a tree's nodes
//! are visited one by one, and the subtree under a directory node (or the
//! content lists under a file node) is walked completely before the next
//! node is visited. So `ls -R` and the restore planner see paths in order,
//! and a visitor can keep a stack that mirrors [`Visitor::enter_tree`] and
//! [`Visitor::leave_tree`].
//!
//! **Concurrency, bounded.** Loads run ahead of the visitor: when a tree is
//! entered, the subtrees (and content lists) below it are started in order,
//! at most [`WalkOptions::concurrency`] per tree, as tasks that progress
//! while the visitor works elsewhere; a semaphore bounds the reads in flight
//! across the whole walk to the same number. Memory is bounded by that
//! window times the depth of the tree, never by its width.
//!
//! **Shared trees, once.** With [`WalkOptions::dedup`] a tree or list seen
//! once (under any path, from any root) is not loaded again: what gc and
//! check need, since snapshots share most of their trees. The seen-set holds
//! one id per distinct tree and list, nothing per file.
//!
//! **Damage, per subtree.** A tree or list that cannot be read or decoded is
//! handed to [`Visitor::damaged`] with its path; by default that ends the
//! walk with the error, and a visitor that records it instead lets the walk
//! go on with the rest.
//!
//! A walk reads tree and content-list blobs only (tree packs); it never reads
//! file content.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use nfrepo_format::{BlobId, BlobKind, Content, ContentList, Node, NodeKind, Tree};
use tokio::sync::Semaphore;

use crate::read::Reader;
use crate::{Error, Result};

/// A tree or content list the walk reaches, with what its parent says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A tree: a snapshot root or a directory's subtree.
    Tree(BlobId),
    /// A content list: the root list of a file (level and length from its
    /// node) or an inner list (from its parent list's entry).
    List {
        /// Its id.
        id: BlobId,
        /// The level the parent says it has.
        level: u8,
        /// The content bytes the parent says it covers.
        len: u64,
    },
}

impl Pending {
    /// The blob's id.
    pub(crate) const fn id(&self) -> BlobId {
        match self {
            Self::Tree(id) | Self::List { id, .. } => *id,
        }
    }

    const fn what(&self) -> &'static str {
        match self {
            Self::Tree(_) => "tree",
            Self::List { .. } => "content list",
        }
    }
}

/// Why a tree or list could not be walked.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    /// The blob could not be read or did not open (missing, damaged, storage failure).
    Read(Error),
    /// The blob opened (authenticated, re-hashed) but its plaintext does not decode.
    Decode(nfrepo_format::Error),
}

impl LoadFailure {
    /// The failure as an engine error naming the blob and where the walk met it.
    pub(crate) fn into_error(self, path: &[u8], blob: &Pending) -> Error {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {}", String::from_utf8_lossy(path))
        };
        match self {
            Self::Read(Error::Corrupted { object, source }) => Error::Corrupted {
                object: format!("{object}{at}"),
                source,
            },
            Self::Read(Error::Missing { object, detail }) => Error::Missing {
                object: format!("{object}{at}"),
                detail,
            },
            Self::Read(other) => other,
            Self::Decode(e) => Error::decode(format!("{} {}{at}", blob.what(), blob.id()), e),
        }
    }
}

/// What a walk calls back. Every method has a default that does nothing
/// (and, for [`Self::damaged`], stops the walk), so a visitor implements
/// only what it needs. An `Err` from any method ends the walk with it.
pub(crate) trait Visitor {
    /// Whether to load `blob`, reached at `path` (a directory's path, or a
    /// file's for its lists). `false` prunes it and everything below.
    /// Called before the nodes of the tree that names it are visited.
    fn descend(&mut self, _path: &[u8], _blob: &Pending) -> Result<bool> {
        Ok(true)
    }

    /// A tree was loaded; its nodes follow, then [`Self::leave_tree`].
    fn enter_tree(&mut self, _path: &[u8], _id: &BlobId, _tree: &Tree) -> Result<()> {
        Ok(())
    }

    /// One node of the tree `parent`, at `path` (the tree's path joined with its name).
    fn visit_node(&mut self, _path: &[u8], _parent: &BlobId, _node: &Node) -> Result<()> {
        Ok(())
    }

    /// Everything under the tree `id` has been visited.
    fn leave_tree(&mut self, _path: &[u8], _id: &BlobId) -> Result<()> {
        Ok(())
    }

    /// A content list of the file at `path` was loaded (with
    /// [`WalkOptions::lists`] only). Its inner lists follow when its level is above 1.
    fn visit_list(&mut self, _path: &[u8], _blob: &Pending, _list: &ContentList) -> Result<()> {
        Ok(())
    }

    /// `blob`, at `path`, could not be loaded. Return `Ok` to go on without it.
    ///
    /// # Errors
    /// By default, the failure, naming the blob and the path.
    fn damaged(&mut self, path: &[u8], blob: &Pending, failure: LoadFailure) -> Result<()> {
        Err(failure.into_error(path, blob))
    }

    /// Called after each [`Self::visit_node`]: a future the walk awaits
    /// before the next node, so a visitor that hands nodes to a slower
    /// consumer holds the walk back (loads already started keep going,
    /// within the window). `None` (the default) goes on at once.
    fn pause(&mut self) -> Option<Pause> {
        None
    }
}

/// What [`Visitor::pause`] returns: the walk waits for it; an error ends the walk.
pub type Pause = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// How a walk runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkOptions {
    /// Load each tree and list once across the whole walk (see the module docs).
    pub(crate) dedup: bool,
    /// Also load the content lists of files (for [`Visitor::visit_list`]).
    pub(crate) lists: bool,
    /// Loads in flight at once, and loads started ahead per tree.
    pub(crate) concurrency: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            dedup: false,
            lists: false,
            concurrency: 16,
        }
    }
}

/// A loaded blob.
enum Loaded {
    Tree(Tree),
    List(ContentList),
}

/// A load running as its own task, so it progresses while the visitor is
/// busy elsewhere; aborted if the walk ends first.
struct Task(tokio::task::JoinHandle<std::result::Result<Loaded, LoadFailure>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A child of a frame: loaded when the walk reaches item `at` of its parent.
struct Child {
    at: usize,
    path: Vec<u8>,
    blob: Pending,
    task: Option<Task>,
}

enum Body {
    /// The walk's roots (item `i` is root `i`).
    Roots(usize),
    /// A tree being visited, node by node.
    Tree(BlobId, Tree),
    /// A list: no items of its own, only inner lists.
    List,
}

struct Frame {
    path: Vec<u8>,
    body: Body,
    cursor: usize,
    children: VecDeque<Child>,
    started: usize,
}

struct Walk<'v, V: Visitor> {
    reader: Reader,
    visitor: &'v mut V,
    options: WalkOptions,
    seen: HashSet<BlobId>,
    permits: Arc<Semaphore>,
}

/// Walks the trees `roots` (each with the path prefix its nodes get) with
/// `visitor` (see the module docs).
///
/// # Errors
/// The first error a visitor method returns (by default, a damaged tree or list).
pub(crate) async fn walk<V: Visitor>(
    reader: &Reader,
    roots: impl IntoIterator<Item = (Vec<u8>, BlobId)>,
    options: WalkOptions,
    visitor: &mut V,
) -> Result<()> {
    let options = WalkOptions {
        concurrency: options.concurrency.max(1),
        ..options
    };
    let mut walk = Walk {
        reader: reader.clone(),
        visitor,
        options,
        seen: HashSet::new(),
        permits: Arc::new(Semaphore::new(options.concurrency)),
    };
    let mut children = VecDeque::new();
    let mut count = 0;
    for (i, (path, root)) in roots.into_iter().enumerate() {
        count = i + 1;
        walk.child(&mut children, i, path, Pending::Tree(root))?;
    }
    let roots = Frame {
        path: Vec::new(),
        body: Body::Roots(count),
        cursor: 0,
        children,
        started: 0,
    };
    walk.run(roots).await
}

impl<V: Visitor> Walk<'_, V> {
    /// Queues `blob` under the frame being built, unless seen or pruned.
    fn child(&mut self, children: &mut VecDeque<Child>, at: usize, path: Vec<u8>, blob: Pending) -> Result<()> {
        if self.options.dedup && !self.seen.insert(blob.id()) {
            return Ok(());
        }
        if self.visitor.descend(&path, &blob)? {
            children.push_back(Child {
                at,
                path,
                blob,
                task: None,
            });
        }
        Ok(())
    }

    async fn run(mut self, roots: Frame) -> Result<()> {
        let mut stack = vec![roots];
        while let Some(frame) = stack.last_mut() {
            self.start(frame);
            let at = frame.cursor;
            let done = match &frame.body {
                Body::Roots(count) => at >= *count,
                Body::Tree(_, tree) => at >= tree.nodes.len(),
                Body::List => frame.children.is_empty(),
            };
            if done {
                if let Some(Frame {
                    path,
                    body: Body::Tree(id, _),
                    ..
                }) = stack.pop()
                {
                    self.visitor.leave_tree(&path, &id)?;
                }
                continue;
            }
            match &frame.body {
                Body::Tree(id, tree) => {
                    if let Some(node) = tree.nodes.get(at) {
                        let path = join(&frame.path, &node.name);
                        self.visitor.visit_node(&path, id, node)?;
                    }
                    frame.cursor += 1;
                    if let Some(pause) = self.visitor.pause() {
                        pause.await?;
                    }
                }
                Body::Roots(_) => frame.cursor += 1,
                Body::List => {}
            }
            let next = match &frame.body {
                Body::List => frame.children.pop_front(),
                _ if frame.children.front().is_some_and(|c| c.at == at) => frame.children.pop_front(),
                _ => None,
            };
            if let Some(child) = next {
                frame.started = frame.started.saturating_sub(1);
                self.start(frame);
                if let Some(entered) = self.finish(child).await? {
                    stack.push(entered);
                }
            }
        }
        Ok(())
    }

    /// Starts loads for the first children of `frame`, up to the window.
    /// Children are started and consumed in order, so the started ones are
    /// always the first `frame.started`.
    fn start(&self, frame: &mut Frame) {
        let window = self.options.concurrency.min(frame.children.len());
        while frame.started < window {
            if let Some(child) = frame.children.get_mut(frame.started) {
                child.task = Some(self.spawn(child.blob));
            }
            frame.started += 1;
        }
    }

    fn spawn(&self, blob: Pending) -> Task {
        let reader = self.reader.clone();
        let permits = self.permits.clone();
        Task(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| LoadFailure::Read(Error::Pipeline(e.to_string())))?;
            load(&reader, blob).await
        }))
    }

    /// Waits for a child's load; hands it to the visitor and returns the
    /// frame to walk next, or reports the damage.
    async fn finish(&mut self, mut child: Child) -> Result<Option<Frame>> {
        let mut task = match child.task.take() {
            Some(task) => task,
            None => self.spawn(child.blob),
        };
        let loaded = match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(LoadFailure::Read(Error::Pipeline(e.to_string()))),
        };
        match loaded {
            Err(failure) => {
                self.visitor.damaged(&child.path, &child.blob, failure)?;
                Ok(None)
            }
            Ok(Loaded::Tree(tree)) => {
                let id = child.blob.id();
                self.visitor.enter_tree(&child.path, &id, &tree)?;
                let mut children = VecDeque::new();
                for (i, node) in tree.nodes.iter().enumerate() {
                    match &node.kind {
                        NodeKind::Dir { tree } => {
                            self.child(&mut children, i, join(&child.path, &node.name), Pending::Tree(*tree))?;
                        }
                        NodeKind::File {
                            size,
                            content: Content::List { root, depth },
                            ..
                        } if self.options.lists => {
                            let blob = Pending::List {
                                id: *root,
                                level: *depth,
                                len: *size,
                            };
                            self.child(&mut children, i, join(&child.path, &node.name), blob)?;
                        }
                        _ => {}
                    }
                }
                Ok(Some(Frame {
                    path: child.path,
                    body: Body::Tree(id, tree),
                    cursor: 0,
                    children,
                    started: 0,
                }))
            }
            Ok(Loaded::List(list)) => {
                self.visitor.visit_list(&child.path, &child.blob, &list)?;
                let mut children = VecDeque::new();
                if list.level > 1 {
                    for (i, entry) in list.entries.iter().enumerate() {
                        let blob = Pending::List {
                            id: entry.id,
                            level: list.level - 1,
                            len: entry.len,
                        };
                        self.child(&mut children, i, child.path.clone(), blob)?;
                    }
                }
                Ok(Some(Frame {
                    path: child.path,
                    body: Body::List,
                    cursor: 0,
                    children,
                    started: 0,
                }))
            }
        }
    }
}

/// Reads and decodes one tree or list.
async fn load(reader: &Reader, blob: Pending) -> std::result::Result<Loaded, LoadFailure> {
    match blob {
        Pending::Tree(id) => {
            let bytes = reader.read_blob(&id, BlobKind::Tree).await.map_err(LoadFailure::Read)?;
            Tree::decode(&bytes).map(Loaded::Tree).map_err(LoadFailure::Decode)
        }
        Pending::List { id, .. } => {
            let bytes = reader
                .read_blob(&id, BlobKind::ContentList)
                .await
                .map_err(LoadFailure::Read)?;
            ContentList::decode(&bytes)
                .map(Loaded::List)
                .map_err(LoadFailure::Decode)
        }
    }
}

/// `prefix/name`, or `name` at the top.
pub(crate) fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}
