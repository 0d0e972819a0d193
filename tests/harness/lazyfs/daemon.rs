//! The FUSE side of the lazy filesystem: fuser's `Filesystem` requests,
//! each locking the in-memory state and turning its result into a reply.

use super::*;

/// The FUSE request handler; a thin layer that locks the state and maps results to replies.
pub(super) struct Daemon {
    pub(super) state: Arc<Mutex<State>>,
}

impl Daemon {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn reply_empty(reply: ReplyEmpty, result: Res<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

fn reply_entry(reply: ReplyEntry, result: Res<FileAttr>) {
    match result {
        // Generation 0 is fine: inode numbers are never reused.
        Ok(attr) => reply.entry(&TTL, &attr, 0),
        Err(errno) => reply.error(errno),
    }
}

fn reply_attr(reply: ReplyAttr, result: Res<FileAttr>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(errno) => reply.error(errno),
    }
}

fn file_type(mode: u32) -> Res<FileType> {
    Ok(match mode & libc::S_IFMT {
        0 | libc::S_IFREG => FileType::RegularFile,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => return Err(libc::EINVAL),
    })
}

impl Filesystem for Daemon {
    fn init(&mut self, _req: &Request<'_>, _config: &mut KernelConfig) -> Result<(), Errno> {
        // Deliberately request nothing beyond fuser's defaults: no FUSE_WRITEBACK_CACHE (the
        // kernel would then hold dirty data we cannot drop) and no FUSE_POSIX_LOCKS or
        // FUSE_FLOCK_LOCKS (so the kernel's local lock manager handles flock/fcntl locks).
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .child(parent, name)
            .and_then(|ino| state.entry_for(ino));
        reply_entry(reply, result);
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        let mut state = self.state();
        if let Some(node) = state.inodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(nlookup);
            state.maybe_free(ino);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        reply_attr(reply, self.state().attr(ino));
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = self
            .state()
            .setattr(ino, mode, uid, gid, size, atime, mtime, ctime, fh);
        reply_attr(reply, result);
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = file_type(mode)
            .and_then(|kind| state.create_node(req, parent, name, kind, mode & !umask, rdev))
            .and_then(|ino| state.entry_for(ino));
        reply_entry(reply, result);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = state
            .create_node(req, parent, name, FileType::Directory, mode & !umask, 0)
            .and_then(|ino| state.entry_for(ino));
        reply_entry(reply, result);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.state().remove(parent, name, false));
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.state().remove(parent, name, true));
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let result = self.state().rename(parent, name, newparent, newname, flags);
        reply_empty(reply, result);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut state = self.state();
        let result = match state.inode(ino) {
            Ok(node) if node.is_dir() => Err(libc::EISDIR),
            Ok(_) => state.open_handle(Handle::File { ino }),
            Err(errno) => Err(errno),
        };
        match result {
            // Direct I/O: the page cache would keep serving data a power cut has reverted.
            Ok(fh) => reply.opened(fh, FOPEN_DIRECT_IO),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let state = self.state();
        let result = state.check_handle(fh, ino).and_then(|()| {
            let offset = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
            match &state.inode(ino)?.cur.body {
                Body::File(content) => Ok(content.read(offset, size as usize)),
                Body::Dir(_) => Err(libc::EISDIR),
            }
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino, fh, offset, data) {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        // close() makes nothing durable; answering (rather than ENOSYS) just saves the kernel
        // a round trip to learn that.
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        // fdatasync persists the size, which is all the metadata this model has that
        // matters, so both flavours make the whole file durable.
        reply_empty(reply, self.state().fsync(ino, fh));
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut state = self.state();
        let result = match state.inode(ino) {
            Ok(node) if !node.is_dir() => Err(libc::ENOTDIR),
            Ok(_) => state.open_handle(Handle::Dir {
                ino,
                listing: Vec::new(),
            }),
            Err(errno) => Err(errno),
        };
        match result {
            // No FOPEN_CACHE_DIR: the kernel must not cache listings across a power cut.
            Ok(fh) => reply.opened(fh, 0),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        match self.state().readdir(ino, fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh);
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.state().fsyncdir(ino, fh));
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let state = self.state();
        let (total, free) = state.statfs();
        // Inode numbers are never reused, so "free inodes" counts the numbers left.
        let files = u64::MAX / 2;
        let free_files = files.saturating_sub(state.next_ino);
        drop(state);
        reply.statfs(
            total,
            free,
            free,
            files,
            free_files,
            BLOCK_SIZE,
            NAME_MAX as u32,
            BLOCK_SIZE,
        );
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        // Permissions are not modelled; existence is all that is checked.
        reply_empty(reply, self.state().inode(ino).map(|_| ()));
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.state().create(req, parent, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, 0, fh, FOPEN_DIRECT_IO),
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.state().fallocate(ino, fh, offset, length, mode));
    }
}
