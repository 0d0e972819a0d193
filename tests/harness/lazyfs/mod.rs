//! `LazyFs`: an in-memory FUSE filesystem for crash tests that keeps every change that was not
//! fsynced volatile and throws it away on a simulated power cut (modelled on Jepsen's lazyfs,
//! but written from scratch and much stricter about directories).
//!
//! This module owns one mounted filesystem per [`LazyFs`] value: the whole tree lives in
//! memory (there is no backing directory), one background thread serves the kernel's FUSE
//! requests, and dropping the value unmounts it.
//!
//! # Durability model: a disk that honours only fsync
//!
//! Every inode has a *current* state (what processes see) and a *durable* state (what
//! survives [`LazyFs::power_cut`]):
//!
//! * `fsync`/`fdatasync` of a regular file makes its current content, size and attributes
//!   durable. Nothing else does: not `close`, not `flush`, not `sync_file_range` (the kernel
//!   never forwards that one to a FUSE daemon), not `sync(2)`/`syncfs(2)`.
//! * `fsync` of a directory (FUSE `fsyncdir`, what `File::open(dir)?.sync_all()` sends) makes
//!   that directory's current entry list (name -> inode) and attributes durable. The root
//!   directory is no exception.
//! * A new inode is durable from birth as an *empty* object with its creation attributes, so a
//!   file whose directory entry was made durable but whose content never was comes back with
//!   0 bytes, and a directory whose own entries were never synced comes back empty.
//! * Creates, unlinks and renames only change directory entries, so each is durable only once
//!   every directory involved has been fsynced: an un-synced unlink comes back, an un-synced
//!   rename reverts, and a file whose content was fsynced but whose entry never was vanishes.
//!
//! A power cut sets every reachable inode's current state to its durable state, walking the
//! durable entries from the root; inodes that are no longer reachable are deleted. Because
//! directories are synced independently, the durable entries can name one directory twice
//! (a directory moved between two parents of which only one was synced); like `fsck`, the walk
//! keeps the first name it meets (breadth first, names in byte order) and drops the others, so
//! the tree stays a tree. Files may legitimately end up with two names this way (a hard link).
//!
//! # What the kernel is allowed to cache
//!
//! Nothing that could be stale after a power cut: files are opened with `FOPEN_DIRECT_IO` (no
//! page cache, so also no writeback cache and no shared `mmap`), entry and attribute TTLs are
//! zero (every path walk revalidates with `lookup`), directory listings are not cached, and
//! `fsync`/`fsyncdir` are implemented (a FUSE daemon that answers `ENOSYS` makes the kernel
//! report every later fsync as a success without asking).
//!
//! Handles opened before a power cut are stale afterwards: their reads, writes and fsyncs fail
//! with `EIO`, so a straggler process can neither observe nor persist pre-cut state. Inode
//! numbers are never reused, so the kernel's references to inodes that vanished get `ENOENT`
//! rather than some other file.
//!
//! # Hazard: the daemon lives in the test process
//!
//! If the process that owns the `LazyFs` exits abruptly (`std::process::exit`, abort,
//! SIGKILL) while one of its *own* threads is inside a request on the mount (say an
//! in-process sled's flusher doing an fsync), that thread waits for an answer only the dead
//! serving thread could give: the process stays an unkillable zombie and the mount hangs.
//! Run the workload in child processes (their requests are always answered or cancelled when
//! they are killed), drop in-process users before the `LazyFs`, and if it happens anyway,
//! `mount -t fusectl none /sys/fs/fuse/connections` and write `1` to that connection's
//! `abort` file. A normal panic unwinds through `Drop` and is fine.
//!
//! # Not modelled
//!
//! Permissions are not enforced (`access` only checks existence; every test process runs as
//! root), `flock`/`fcntl` locks are left to the kernel's local lock manager (which works across
//! processes using this mount), there are no symlinks, hard links (`link`) or xattrs, and
//! `atime` changes only through `setattr`.

// Copied into test crates as a module, where a given harness may not use every item.
#![cfg_attr(test, allow(dead_code))]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, FUSE_ROOT_ID,
};

/// Errors travel as raw errno values, which is what FUSE replies carry.
type Errno = libc::c_int;
type Res<T> = Result<T, Errno>;

/// Zero TTL: the kernel must ask again every time, or it could keep serving entries and
/// attributes that a power cut has since reverted.
const TTL: Duration = Duration::ZERO;
/// File contents are kept in chunks of this size, shared copy-on-write between the current
/// and the durable state, so an fsync costs one pointer per chunk instead of a full copy
/// (sled fsyncs its whole log file several times a second).
const CHUNK: usize = 64 * 1024;
/// Largest file size accepted; a bound so a stray huge `ftruncate` cannot eat the machine.
const MAX_FILE_SIZE: u64 = 1 << 40;
/// `statfs` reports this much space in total (there is no real limit besides memory).
const CAPACITY: u64 = 1 << 40;
const BLOCK_SIZE: u32 = 4096;
const NAME_MAX: usize = 255;
/// `f_type` of a mounted FUSE filesystem, used to check that a mount really took place.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
/// How long `Drop` waits for the serving thread after unmounting before leaving it behind.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);

/// Counters of what the filesystem has served, for test notes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LazyFsStats {
    /// `fsync` and `fdatasync` calls on files that were served (and made something durable).
    pub fsyncs: u64,
    /// `fsync` calls on directories (FUSE `fsyncdir`) that were served.
    pub fsyncdirs: u64,
    /// Bytes accepted by `write` calls.
    pub bytes_written: u64,
}

/// A mounted lazy filesystem; see the module docs for its semantics. Dropping it unmounts.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl LazyFs {
    /// Mounts an empty in-memory lazy filesystem at `mountpoint` (an existing empty dir),
    /// serving on a background thread.
    ///
    /// Returns once the kernel has finished the FUSE handshake, so the mount is usable at
    /// once. As root it mounts with `mount(2)` itself and needs no helper binary; otherwise
    /// it goes through `fusermount3`/`fusermount` (Debian package `fuse3`).
    ///
    /// `auto_unmount` is deliberately not used: fuser offers it only through fusermount,
    /// which then lingers as a zombie child per mount and unmounts asynchronously (after
    /// `Drop` returned). The price is that a test process killed outright leaves a dead mount
    /// ("Transport endpoint is not connected") on its temp dir; `umount` it.
    ///
    /// # Errors
    ///
    /// When the path does not exist, the mount is refused (no permission, no `/dev/fuse`, no
    /// helper binary), or the path does not show a FUSE filesystem afterwards.
    pub fn mount(mountpoint: &Path) -> io::Result<LazyFs> {
        let mountpoint = mountpoint.canonicalize()?;
        let (uid, gid) = (euid(), egid());
        let state = Arc::new(Mutex::new(State::new(uid, gid)));
        let mut options = vec![MountOption::FSName("lazyfs".to_owned())];
        if uid == 0 {
            // Lets processes of other uids in too; root needs no `user_allow_other` for it.
            options.push(MountOption::AllowOther);
        }
        let daemon = Daemon {
            state: Arc::clone(&state),
        };
        let session = fuser::spawn_mount2(daemon, &mountpoint, &options)?;
        let fs = LazyFs {
            state,
            mountpoint,
            session: Some(session),
        };
        // statfs blocks until the kernel and our thread have completed INIT, and proves the
        // path now shows the FUSE filesystem and not the directory underneath.
        let magic = statfs_type(&fs.mountpoint)?;
        if magic != FUSE_SUPER_MAGIC {
            return Err(io::Error::other(format!(
                "{} is not a FUSE mount after mounting (f_type {magic:#x})",
                fs.mountpoint.display()
            )));
        }
        Ok(fs)
    }

    /// Simulated power loss: every directory's entries revert to what they were at that
    /// directory's last fsync, every file's contents (and size) revert to its last
    /// fsync/fdatasync; files not reachable any more disappear. The filesystem keeps serving
    /// afterwards (the test restarts processes on it). Call it only when no process has files
    /// open on it (the test kill -9s them first), but it must not crash if some do (stale
    /// handles just get errors).
    pub fn power_cut(&self) {
        lock(&self.state).power_cut();
    }

    /// Counters: number of fsync/fdatasync/fsyncdir calls served, bytes written (for test
    /// notes).
    #[must_use]
    pub fn stats(&self) -> LazyFsStats {
        lock(&self.state).stats
    }

    /// Where the filesystem is mounted (canonicalized form of the path given to `mount`).
    #[must_use]
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for LazyFs {
    /// Unmounts, then waits (bounded) for the serving thread to finish.
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Unmount ourselves rather than leave it to fuser's guard, to choose what happens
        // when the mount is still busy.
        let clean = unmount(&self.mountpoint);
        let guard = {
            let BackgroundSession { guard, .. } = session;
            guard
            // The rest of the session (fuser's mount guard) drops here.
        };
        if !clean {
            // A process still holds files open: the unmount was lazy and the thread serves
            // that process until it closes them. Do not hang the test on it; leave the
            // thread behind (it ends by itself then).
            return;
        }
        let deadline = Instant::now() + UNMOUNT_WAIT;
        while !guard.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if guard.is_finished() {
            let _ = guard.join();
        }
    }
}

/// Ok(()) when this machine can mount FUSE (e.g. /dev/fuse exists and the mount helper is
/// installed); Err(reason) otherwise, so a test can print loudly why it did not run.
///
/// Beyond the cheap checks it mounts and unmounts a throwaway `LazyFs` in the temp dir, the
/// only way to know that e.g. a container's seccomp/capabilities allow it. The answer is
/// computed once per process.
///
/// # Errors
///
/// A human-readable reason why FUSE cannot be used here.
pub fn fuse_available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe_fuse).clone()
}

fn probe_fuse() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist (no FUSE in this kernel/container)".to_owned());
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    if euid() != 0 && find_fusermount().is_none() {
        return Err(
            "not root and no fusermount3/fusermount in PATH (Debian package `fuse3`)".to_owned(),
        );
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("lazyfs-probe-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = LazyFs::mount(&dir)
        .map(drop)
        .map_err(|e| format!("test mount on {} failed: {e}", dir.display()));
    let _ = std::fs::remove_dir(&dir);
    result
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// The fusermount binary fuser would use (it looks for the same two names in PATH).
fn find_fusermount() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["fusermount3", "fusermount"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn statfs_type(path: &Path) -> io::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and buf is a valid, writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), std::ptr::addr_of_mut!(buf)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between libc targets
    Ok(buf.f_type as i64)
}

/// Unmounts `path`, detaching it lazily if it is busy so the path is free at once either
/// way. Returns whether the filesystem was really released (not busy), i.e. whether the
/// serving thread will finish promptly.
fn unmount(path: &Path) -> bool {
    if euid() == 0 {
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: c_path is NUL-terminated; umount2 only reads it.
        if unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0 {
            return true;
        }
        // SAFETY: as above.
        unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        return false;
    }
    let Some(bin) = find_fusermount() else {
        return false;
    };
    let run = |lazy: bool| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        cmd.arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if run(false) {
        return true;
    }
    run(true);
    false
}

/// Locks the state, shrugging off poisoning: a panic in one request must not turn every
/// later request (and the test's `power_cut`) into a second panic.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Contents of a regular file: a size plus fixed-size chunks shared copy-on-write.
///
/// Invariant: bytes of the last chunk beyond `len` are zero, so growing the file exposes
/// zeros without extra work. `None` chunks are holes (all zero).
#[derive(Clone, Default)]
struct Content {
    len: u64,
    chunks: Vec<Option<Arc<Vec<u8>>>>,
}

impl Content {
    fn chunks_for(len: u64) -> usize {
        usize::try_from(len.div_ceil(CHUNK as u64)).expect("file size bounded by MAX_FILE_SIZE")
    }

    /// Splits a byte position into (chunk index, offset within chunk).
    fn locate(pos: u64) -> (usize, usize) {
        let chunk = CHUNK as u64;
        ((pos / chunk) as usize, (pos % chunk) as usize)
    }

    fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        let end = self.len.min(offset.saturating_add(size as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (idx, within) = Self::locate(pos);
            let n = (CHUNK - within).min((end - pos) as usize);
            match &self.chunks[idx] {
                Some(chunk) => out.extend_from_slice(&chunk[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            pos += n as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, mut data: &[u8]) {
        let end = offset + data.len() as u64;
        if end > self.len {
            self.set_len(end);
        }
        let mut pos = offset;
        while !data.is_empty() {
            let (idx, within) = Self::locate(pos);
            let n = (CHUNK - within).min(data.len());
            let chunk = self.chunks[idx].get_or_insert_with(|| Arc::new(vec![0; CHUNK]));
            Arc::make_mut(chunk)[within..within + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            pos += n as u64;
        }
    }

    /// Zeroes `[offset, offset + len)` clipped to the current size; whole chunks become holes.
    fn zero(&mut self, offset: u64, len: u64) {
        let end = self.len.min(offset.saturating_add(len));
        let mut pos = offset;
        while pos < end {
            let (idx, within) = Self::locate(pos);
            let n = (CHUNK - within).min((end - pos) as usize);
            if n == CHUNK {
                self.chunks[idx] = None;
            } else if let Some(chunk) = &mut self.chunks[idx] {
                Arc::make_mut(chunk)[within..within + n].fill(0);
            }
            pos += n as u64;
        }
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            // Zero the cut-off tail first to keep the invariant for the last kept chunk.
            self.zero(len, self.len - len);
        }
        self.chunks.resize(Self::chunks_for(len), None);
        self.len = len;
    }
}

#[derive(Clone)]
struct Meta {
    perm: u16,
    uid: u32,
    gid: u32,
    rdev: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
}

#[derive(Clone)]
enum Body {
    /// Regular files; also FIFOs, sockets and device nodes, which simply stay empty (the
    /// kernel never sends their I/O here).
    File(Content),
    Dir(BTreeMap<OsString, u64>),
}

/// One state of an inode: what processes see now, or what survives a power cut.
#[derive(Clone)]
struct Version {
    meta: Meta,
    body: Body,
}

struct Inode {
    kind: FileType,
    cur: Version,
    durable: Version,
    /// Directories only: the directory holding the current entry, for ".." and for refusing
    /// renames of a directory into its own subtree.
    parent: u64,
    /// Current directory entries naming this inode.
    links: u32,
    /// Durable directory entries naming this inode (of any directory, reachable or not).
    durable_links: u32,
    /// The kernel's lookup count (entries replied minus forgotten).
    lookups: u64,
    /// Open handles issued since the last power cut.
    opens: u32,
}

impl Inode {
    fn entries(&self) -> Res<&BTreeMap<OsString, u64>> {
        match &self.cur.body {
            Body::Dir(entries) => Ok(entries),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self) -> Res<&mut BTreeMap<OsString, u64>> {
        match &mut self.cur.body {
            Body::Dir(entries) => Ok(entries),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn content_mut(&mut self) -> Res<&mut Content> {
        match (&mut self.cur.body, self.kind) {
            (Body::File(content), FileType::RegularFile) => Ok(content),
            (Body::Dir(_), _) => Err(libc::EISDIR),
            _ => Err(libc::EINVAL),
        }
    }

    fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }
}

enum Handle {
    File {
        ino: u64,
    },
    /// `listing` is a snapshot taken at the first `readdir` (offset 0), so offsets stay
    /// meaningful while the directory changes during a listing (`rm -rf` does that).
    Dir {
        ino: u64,
        listing: Vec<(u64, FileType, OsString)>,
    },
}

impl Handle {
    fn ino(&self) -> u64 {
        match self {
            Handle::File { ino } | Handle::Dir { ino, .. } => *ino,
        }
    }
}

struct State {
    inodes: HashMap<u64, Inode>,
    /// Never decreases, so inode numbers are never reused.
    next_ino: u64,
    /// Cleared by a power cut, which makes every earlier handle stale.
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    stats: LazyFsStats,
}

fn new_meta(perm: u16, uid: u32, gid: u32, rdev: u32) -> Meta {
    let now = SystemTime::now();
    Meta {
        perm,
        uid,
        gid,
        rdev,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
    }
}

impl State {
    fn new(uid: u32, gid: u32) -> State {
        let root = Version {
            meta: new_meta(0o755, uid, gid, 0),
            body: Body::Dir(BTreeMap::new()),
        };
        let root = Inode {
            kind: FileType::Directory,
            cur: root.clone(),
            durable: root,
            parent: FUSE_ROOT_ID,
            // The mount itself names the root; this also keeps it from ever being freed.
            links: 1,
            durable_links: 1,
            lookups: 0,
            opens: 0,
        };
        State {
            inodes: HashMap::from([(FUSE_ROOT_ID, root)]),
            next_ino: FUSE_ROOT_ID + 1,
            handles: HashMap::new(),
            next_fh: 1,
            stats: LazyFsStats::default(),
        }
    }

    fn inode(&self, ino: u64) -> Res<&Inode> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Res<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Res<u64> {
        self.inode(parent)?
            .entries()?
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    /// Entries of a directory that new names may go into: one that has not been removed
    /// (a process can still hold a removed directory open or as its cwd).
    fn live_dir(&self, ino: u64) -> Res<&BTreeMap<OsString, u64>> {
        let node = self.inode(ino)?;
        if node.links == 0 {
            return Err(libc::ENOENT);
        }
        node.entries()
    }

    fn attr(&self, ino: u64) -> Res<FileAttr> {
        let node = self.inode(ino)?;
        let meta = &node.cur.meta;
        let (size, nlink) = match &node.cur.body {
            Body::File(content) => (content.len, node.links),
            Body::Dir(entries) => {
                let subdirs = entries
                    .values()
                    .filter(|child| self.inodes.get(child).is_some_and(Inode::is_dir))
                    .count();
                let nlink = if node.links == 0 {
                    0
                } else {
                    2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2)
                };
                (entries.len() as u64 * 32, nlink)
            }
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: meta.atime,
            mtime: meta.mtime,
            ctime: meta.ctime,
            crtime: meta.crtime,
            kind: node.kind,
            perm: meta.perm,
            nlink,
            uid: meta.uid,
            gid: meta.gid,
            rdev: meta.rdev,
            blksize: BLOCK_SIZE,
            flags: 0,
        })
    }

    /// Replies to the kernel with an entry for `ino`, counting the lookup reference that
    /// such a reply hands the kernel.
    fn entry_for(&mut self, ino: u64) -> Res<FileAttr> {
        let attr = self.attr(ino)?;
        self.inode_mut(ino)?.lookups += 1;
        Ok(attr)
    }

    fn touch_dir(&mut self, ino: u64) {
        if let Some(node) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            node.cur.meta.mtime = now;
            node.cur.meta.ctime = now;
        }
    }

    /// Creates a new inode named `name` in `parent`. Its durable state is the empty object
    /// as created; nothing about it survives a power cut until `parent` is fsynced.
    fn create_node(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        perm: u32,
        rdev: u32,
    ) -> Res<u64> {
        if name.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        if self.live_dir(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = if kind == FileType::Directory {
            Body::Dir(BTreeMap::new())
        } else {
            Body::File(Content::default())
        };
        let version = Version {
            meta: new_meta((perm & 0o7777) as u16, req.uid(), req.gid(), rdev),
            body,
        };
        self.inodes.insert(
            ino,
            Inode {
                kind,
                cur: version.clone(),
                durable: version,
                parent,
                links: 1,
                durable_links: 0,
                lookups: 0,
                opens: 0,
            },
        );
        self.inode_mut(parent)?
            .entries_mut()?
            .insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    /// Frees `ino` (and, transitively, what only it kept alive) once nothing refers to it:
    /// no current or durable entry, no kernel lookup, no open handle.
    fn maybe_free(&mut self, ino: u64) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            let unreferenced = self.inodes.get(&ino).is_some_and(|n| {
                n.links == 0 && n.durable_links == 0 && n.lookups == 0 && n.opens == 0
            });
            if ino == FUSE_ROOT_ID || !unreferenced {
                continue;
            }
            let Some(node) = self.inodes.remove(&ino) else {
                continue;
            };
            // A freed directory's entries stop referring to their targets.
            if let Body::Dir(entries) = node.cur.body {
                for child in entries.into_values() {
                    if let Some(c) = self.inodes.get_mut(&child) {
                        c.links = c.links.saturating_sub(1);
                        work.push(child);
                    }
                }
            }
            if let Body::Dir(entries) = node.durable.body {
                for child in entries.into_values() {
                    if let Some(c) = self.inodes.get_mut(&child) {
                        c.durable_links = c.durable_links.saturating_sub(1);
                        work.push(child);
                    }
                }
            }
        }
    }

    fn open_handle(&mut self, handle: Handle) -> Res<u64> {
        self.inode_mut(handle.ino())?.opens += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        Ok(fh)
    }

    /// Handles from before a power cut are gone from the table: they get EIO, like I/O on a
    /// device that lost power under an open file.
    fn check_handle(&self, fh: u64, ino: u64) -> Res<()> {
        match self.handles.get(&fh) {
            Some(handle) if handle.ino() == ino => Ok(()),
            _ => Err(libc::EIO),
        }
    }

    fn release(&mut self, fh: u64) {
        if let Some(handle) = self.handles.remove(&fh) {
            let ino = handle.ino();
            if let Some(node) = self.inodes.get_mut(&ino) {
                node.opens = node.opens.saturating_sub(1);
            }
            self.maybe_free(ino);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<u64>,
    ) -> Res<FileAttr> {
        if let Some(fh) = fh {
            self.check_handle(fh, ino)?;
        }
        let now = SystemTime::now();
        let resolve = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => now,
        };
        let node = self.inode_mut(ino)?;
        if let Some(size) = size {
            if size > MAX_FILE_SIZE {
                return Err(libc::EFBIG);
            }
            node.content_mut()?.set_len(size);
            node.cur.meta.mtime = now;
        }
        let meta = &mut node.cur.meta;
        if let Some(mode) = mode {
            meta.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            meta.uid = uid;
        }
        if let Some(gid) = gid {
            meta.gid = gid;
        }
        if let Some(atime) = atime {
            meta.atime = resolve(atime);
        }
        if let Some(mtime) = mtime {
            meta.mtime = resolve(mtime);
        }
        meta.ctime = ctime.unwrap_or(now);
        self.attr(ino)
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let existing = self.inode(parent)?.entries()?.get(name).copied();
        let ino = match existing {
            // Only reachable when another process created the name between the kernel's
            // negative lookup and this request; behave like open(2) would.
            Some(_) if flags & libc::O_EXCL != 0 => return Err(libc::EEXIST),
            Some(ino) => {
                let node = self.inode_mut(ino)?;
                if flags & libc::O_TRUNC != 0 {
                    node.content_mut()?.set_len(0);
                } else if node.is_dir() {
                    return Err(libc::EISDIR);
                }
                ino
            }
            None => self.create_node(req, parent, name, FileType::RegularFile, mode & !umask, 0)?,
        };
        let fh = self.open_handle(Handle::File { ino })?;
        Ok((self.entry_for(ino)?, fh))
    }

    fn write(&mut self, ino: u64, fh: u64, offset: i64, data: &[u8]) -> Res<u32> {
        self.check_handle(fh, ino)?;
        let offset = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
        if offset.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
            return Err(libc::EFBIG);
        }
        let node = self.inode_mut(ino)?;
        node.content_mut()?.write(offset, data);
        let now = SystemTime::now();
        node.cur.meta.mtime = now;
        node.cur.meta.ctime = now;
        self.stats.bytes_written += data.len() as u64;
        u32::try_from(data.len()).map_err(|_| libc::EINVAL)
    }

    fn fallocate(&mut self, ino: u64, fh: u64, offset: i64, length: i64, mode: i32) -> Res<()> {
        self.check_handle(fh, ino)?;
        let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
            return Err(libc::EINVAL);
        };
        let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
        if length == 0 {
            return Err(libc::EINVAL);
        }
        if end > MAX_FILE_SIZE {
            return Err(libc::EFBIG);
        }
        let content = self.inode_mut(ino)?.content_mut()?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            // Memory needs no reservation; only the size can change.
            0 => {}
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => content.zero(offset, length),
            libc::FALLOC_FL_ZERO_RANGE => content.zero(offset, length),
            _ => return Err(libc::EOPNOTSUPP),
        }
        if !keep_size && end > content.len {
            content.set_len(end);
        }
        Ok(())
    }

    fn fsync(&mut self, ino: u64, fh: u64) -> Res<()> {
        self.check_handle(fh, ino)?;
        let node = self.inode_mut(ino)?;
        if node.is_dir() {
            return Err(libc::EISDIR);
        }
        // Cheap: the content chunks are shared, not copied.
        node.durable = node.cur.clone();
        self.stats.fsyncs += 1;
        Ok(())
    }

    fn fsyncdir(&mut self, ino: u64, fh: u64) -> Res<()> {
        self.check_handle(fh, ino)?;
        let node = self.inode_mut(ino)?;
        let new = node.cur.clone();
        let Body::Dir(new_entries) = &new.body else {
            return Err(libc::ENOTDIR);
        };
        let new_children: Vec<u64> = new_entries.values().copied().collect();
        let old = std::mem::replace(&mut node.durable, new);
        // Move the durable references from the old entry list to the new one; inodes that
        // only the old list kept alive can go now.
        for child in &new_children {
            if let Some(c) = self.inodes.get_mut(child) {
                c.durable_links += 1;
            }
        }
        if let Body::Dir(old_entries) = old.body {
            for child in old_entries.into_values() {
                if let Some(c) = self.inodes.get_mut(&child) {
                    c.durable_links = c.durable_links.saturating_sub(1);
                }
                self.maybe_free(child);
            }
        }
        self.stats.fsyncdirs += 1;
        Ok(())
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Res<()> {
        let ino = self.child(parent, name)?;
        let node = self.inode(ino)?;
        match (want_dir, node.is_dir()) {
            (true, false) => return Err(libc::ENOTDIR),
            (false, true) => return Err(libc::EISDIR),
            (true, true) if !node.entries()?.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.inode_mut(parent)?.entries_mut()?.remove(name);
        self.touch_dir(parent);
        let node = self.inode_mut(ino)?;
        node.links -= 1;
        node.cur.meta.ctime = SystemTime::now();
        self.maybe_free(ino);
        Ok(())
    }

    /// True when `ino` is `ancestor` or lies below it in the current tree.
    fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino) {
                Some(node) if ino != FUSE_ROOT_ID => ino = node.parent,
                _ => return false,
            }
        }
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Res<()> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || noreplace && exchange {
            return Err(libc::EINVAL);
        }
        if newname.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        let src = self.child(parent, name)?;
        let dst = self.live_dir(newparent)?.get(newname).copied();
        if noreplace && dst.is_some() {
            return Err(libc::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(libc::ENOENT);
        }
        if dst == Some(src) {
            // Two names of one inode (or a name onto itself): POSIX says do nothing.
            return Ok(());
        }
        let src_is_dir = self.inode(src)?.is_dir();
        if src_is_dir && self.is_within(newparent, src) {
            return Err(libc::EINVAL);
        }
        if let Some(dst) = dst {
            let target = self.inode(dst)?;
            if exchange {
                if target.is_dir() && self.is_within(parent, dst) {
                    return Err(libc::EINVAL);
                }
            } else {
                match (src_is_dir, target.is_dir()) {
                    (true, false) => return Err(libc::ENOTDIR),
                    (false, true) => return Err(libc::EISDIR),
                    (true, true) if !target.entries()?.is_empty() => return Err(libc::ENOTEMPTY),
                    _ => {}
                }
            }
        }

        let entries = self.inode_mut(parent)?.entries_mut()?;
        entries.remove(name);
        if exchange {
            let dst = dst.expect("checked above");
            entries.insert(name.to_owned(), dst);
            self.inode_mut(dst)?.parent = parent;
        }
        let replaced = self
            .inode_mut(newparent)?
            .entries_mut()?
            .insert(newname.to_owned(), src);
        let now = SystemTime::now();
        let node = self.inode_mut(src)?;
        node.parent = newparent;
        node.cur.meta.ctime = now;
        self.touch_dir(parent);
        self.touch_dir(newparent);
        if let (Some(old), false) = (replaced, exchange) {
            let node = self.inode_mut(old)?;
            node.links -= 1;
            node.cur.meta.ctime = now;
            self.maybe_free(old);
        }
        Ok(())
    }

    fn readdir(&mut self, ino: u64, fh: u64, offset: i64, reply: &mut ReplyDirectory) -> Res<()> {
        self.check_handle(fh, ino)?;
        let skip = usize::try_from(offset).map_err(|_| libc::EINVAL)?;
        if skip == 0 {
            let node = self.inode(ino)?;
            let mut listing = vec![
                (ino, FileType::Directory, OsString::from(".")),
                (node.parent, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in node.entries()? {
                if let Some(c) = self.inodes.get(child) {
                    listing.push((*child, c.kind, name.clone()));
                }
            }
            if let Some(Handle::Dir { listing: slot, .. }) = self.handles.get_mut(&fh) {
                *slot = listing;
            }
        }
        let Some(Handle::Dir { listing, .. }) = self.handles.get(&fh) else {
            return Err(libc::EBADF);
        };
        // Each entry carries the offset of the one after it, which is what the kernel hands
        // back to continue the listing.
        for (i, (child, kind, name)) in listing.iter().enumerate().skip(skip) {
            if reply.add(*child, i as i64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    fn statfs(&self) -> (u64, u64) {
        let used: u64 = self
            .inodes
            .values()
            .map(|node| match &node.cur.body {
                Body::File(content) => content.len.div_ceil(u64::from(BLOCK_SIZE)),
                Body::Dir(_) => 1,
            })
            .sum();
        let total = CAPACITY / u64::from(BLOCK_SIZE);
        (total, total.saturating_sub(used))
    }

    /// The power cut itself; see `LazyFs::power_cut` and the module docs.
    fn power_cut(&mut self) {
        // Every open handle is stale from now on.
        self.handles.clear();

        // Walk the durable tree from the root, breadth first; a directory already placed
        // keeps its first name, later durable entries for it are dropped (fsck-style).
        let mut reachable = HashSet::from([FUSE_ROOT_ID]);
        let mut parents = HashMap::from([(FUSE_ROOT_ID, FUSE_ROOT_ID)]);
        let mut queue = VecDeque::from([FUSE_ROOT_ID]);
        while let Some(dir) = queue.pop_front() {
            let Some(Body::Dir(entries)) = self.inodes.get(&dir).map(|n| &n.durable.body) else {
                continue;
            };
            let mut kept = BTreeMap::new();
            for (name, &child) in entries {
                let Some(node) = self.inodes.get(&child) else {
                    continue;
                };
                if node.is_dir() {
                    if reachable.contains(&child) {
                        continue;
                    }
                    parents.insert(child, dir);
                    queue.push_back(child);
                }
                reachable.insert(child);
                kept.insert(name.clone(), child);
            }
            if let Some(node) = self.inodes.get_mut(&dir) {
                node.durable.body = Body::Dir(kept);
            }
        }

        self.inodes.retain(|ino, _| reachable.contains(ino));
        let mut links: HashMap<u64, u32> = HashMap::new();
        for node in self.inodes.values_mut() {
            node.cur = node.durable.clone();
            node.opens = 0;
            if let Body::Dir(entries) = &node.cur.body {
                for child in entries.values() {
                    *links.entry(*child).or_default() += 1;
                }
            }
        }
        for (ino, node) in &mut self.inodes {
            let n = if *ino == FUSE_ROOT_ID {
                1
            } else {
                links.get(ino).copied().unwrap_or(0)
            };
            node.links = n;
            node.durable_links = n;
            node.parent = parents.get(ino).copied().unwrap_or(FUSE_ROOT_ID);
        }
        // Lookup counts of surviving inodes stay: the kernel still holds those references
        // and will forget them. Vanished inodes are simply unknown from now on.
    }
}

mod daemon;
use daemon::Daemon;

#[cfg(test)]
mod tests {
    use super::{Content, CHUNK};

    /// A plain Vec model of a file, to check the chunked one against.
    fn check(content: &Content, model: &[u8]) {
        assert_eq!(content.len, model.len() as u64);
        assert_eq!(content.read(0, model.len() + 10), model);
        assert_eq!(content.chunks.len(), model.len().div_ceil(CHUNK));
    }

    #[test]
    fn content_matches_a_vec_across_chunk_boundaries() {
        let mut content = Content::default();
        let mut model = Vec::new();
        let apply_write = |content: &mut Content, model: &mut Vec<u8>, at: usize, n: usize| {
            let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8 + 1).collect();
            content.write(at as u64, &data);
            if model.len() < at + n {
                model.resize(at + n, 0);
            }
            model[at..at + n].copy_from_slice(&data);
        };
        apply_write(&mut content, &mut model, CHUNK - 3, 10);
        check(&content, &model);
        apply_write(&mut content, &mut model, 3 * CHUNK + 5, 2 * CHUNK);
        check(&content, &model);
        assert!(content.chunks[2].is_none(), "untouched chunk stays a hole");

        let snapshot = content.clone();
        let snapshot_model = model.clone();
        content.set_len(CHUNK as u64 + 7);
        model.truncate(CHUNK + 7);
        check(&content, &model);
        // Growing again exposes zeros, not the cut-off bytes.
        content.set_len(4 * CHUNK as u64);
        model.resize(4 * CHUNK, 0);
        check(&content, &model);
        content.zero(CHUNK as u64 - 5, CHUNK as u64 + 10);
        model[CHUNK - 5..2 * CHUNK + 5].fill(0);
        check(&content, &model);
        // The snapshot (a durable state) was not touched by any of it.
        check(&snapshot, &snapshot_model);
    }

    #[test]
    fn content_reads_past_the_end_are_short() {
        let mut content = Content::default();
        content.write(0, b"abc");
        assert_eq!(content.read(1, 100), b"bc");
        assert_eq!(content.read(3, 100), b"");
        assert_eq!(content.read(u64::MAX, 100), b"");
    }
}
