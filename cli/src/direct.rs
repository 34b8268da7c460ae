//! A large output file written around the page cache.
//!
//! `streamcube cube` writes tens of megabytes that nothing in the process reads back. Through
//! the page cache, every 4 KiB of it is a cache page the kernel allocates and copies into; where
//! that memory is fresh to the machine (a virtual machine whose host backs guest memory on first
//! touch, like the benchmark machine), that costs more than building the cube's text: 0.2 s of
//! system CPU for 72 MB, against 0.01 s with `O_DIRECT`, where the device reads the blocks
//! straight from one reused, aligned buffer.
//!
//! Only a regular file is written directly; where its file system refuses `O_DIRECT` (when the
//! flag is set or at a write), and for anything that is not a regular file, the output goes
//! through the cache as usual. The last partial block goes through the cache too: direct writes
//! must be whole, aligned blocks.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Alignment of direct writes, in memory, in length and in file offset: a multiple of any
/// device's logical block size.
const ALIGN: usize = 4096;
/// Bytes gathered before a write.
const CAPACITY: usize = 1 << 20;

pub struct DirectFile {
    file: File,
    direct: bool,
    /// `CAPACITY` bytes from `start` on, `start` aligned to `ALIGN` in memory.
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl DirectFile {
    /// Creates (or truncates) `path` for writing, directly where it is a regular file on a file
    /// system that allows it. Anything else (a pipe, where `O_DIRECT` would turn writes into
    /// packets that a small read cuts short; a device; a file system that refuses the flag) is
    /// written through the cache.
    pub fn create(path: &Path) -> io::Result<DirectFile> {
        let file = File::create(path)?;
        let regular = file.metadata()?.file_type().is_file();
        let storage = vec![0u8; CAPACITY + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        let mut out = DirectFile {
            file,
            direct: false,
            storage,
            start,
            len: 0,
        };
        if regular {
            // A refusal (EINVAL where the file system cannot) leaves the file buffered.
            out.set_direct(true).ok();
        }
        Ok(out)
    }

    /// Whether writes still bypass the page cache.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.direct
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: `fcntl` with `F_GETFL` and `F_SETFL` reads and sets the status flags of a file
        // descriptor this value owns; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.direct = on;
        Ok(())
    }

    /// Writes the first `n` gathered bytes (whole blocks when direct) and keeps the rest.
    fn write_out(&mut self, n: usize) -> io::Result<()> {
        let mut done = 0;
        while done < n {
            let part = &self.storage[self.start + done..self.start + n];
            match self.file.write(part) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The file system took the flag but not the write: through the cache, then.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.set_direct(false)?;
                }
                Err(e) => return Err(e),
            }
        }
        let (start, len) = (self.start, self.len);
        self.storage.copy_within(start + n..start + len, start);
        self.len -= n;
        Ok(())
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.len == CAPACITY {
            self.write_out(CAPACITY)?;
        }
        let n = data.len().min(CAPACITY - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(n)
    }

    /// Writes everything gathered. The partial block at the end can only go through the page
    /// cache, after which the file offset is no longer aligned: later writes go through the
    /// cache as well. (`streamcube cube` flushes once, at the end.)
    fn flush(&mut self) -> io::Result<()> {
        if self.direct {
            self.write_out(self.len / ALIGN * ALIGN)?;
            if self.len > 0 {
                self.set_direct(false)?;
            }
        }
        self.write_out(self.len)?;
        self.file.flush()
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // Like `BufWriter`: errors here have nowhere to go; callers that care flush first.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn the_file_holds_exactly_what_was_written_whatever_the_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for total in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            CAPACITY,
            CAPACITY + 1,
            3 * CAPACITY + 77,
        ] {
            let want = bytes(total);
            for piece in [1, 1000, ALIGN, CAPACITY + 5] {
                let path = dir.path().join(format!("out-{total}-{piece}"));
                let mut f = DirectFile::create(&path).expect("create");
                for part in want.chunks(piece) {
                    f.write_all(part).expect("write");
                }
                f.flush().expect("flush");
                drop(f);
                let got = std::fs::read(&path).expect("read back");
                assert_eq!(got.len(), want.len(), "{total} bytes in pieces of {piece}");
                assert!(got == want, "{total} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn writes_after_a_flush_and_without_one_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let want = bytes(2 * CAPACITY + 3 * ALIGN + 10);
        let (a, b) = want.split_at(CAPACITY + 7);
        {
            let mut f = DirectFile::create(&path).expect("create");
            f.write_all(a).expect("write");
            f.flush().expect("flush");
            // The unaligned tail went through the cache; what follows does too.
            assert!(!f.is_direct());
            f.write_all(b).expect("write");
            // No flush: dropping the writer writes the rest.
        }
        assert!(std::fs::read(&path).expect("read back") == want);
    }

    #[test]
    fn an_existing_file_is_replaced_not_overwritten_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        std::fs::write(&path, bytes(3 * CAPACITY)).expect("seed");
        let mut f = DirectFile::create(&path).expect("create");
        f.write_all(b"short\n").expect("write");
        f.flush().expect("flush");
        drop(f);
        assert_eq!(std::fs::read(&path).expect("read back"), b"short\n");
    }

    #[test]
    fn what_is_not_a_regular_file_is_written_through_the_cache() {
        let mut f = DirectFile::create(Path::new("/dev/null")).expect("open /dev/null");
        assert!(!f.is_direct());
        f.write_all(&bytes(CAPACITY + 5)).expect("write");
        f.flush().expect("flush");
    }

    #[test]
    fn a_direct_write_the_system_refuses_is_made_through_the_cache() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let want = bytes(CAPACITY + 123);
        let mut f = DirectFile::create(&path).expect("create");
        // An unaligned file offset: a direct write there fails with EINVAL.
        f.file.seek(SeekFrom::Start(1)).expect("seek");
        f.write_all(&want).expect("write");
        // A whole buffer went out before the flush: through the cache after the refusal.
        assert!(!f.is_direct());
        f.flush().expect("flush");
        drop(f);
        let got = std::fs::read(&path).expect("read back");
        assert_eq!(got[0], 0);
        assert!(got[1..] == want[..]);
    }
}
