//! Reading an S3 object as a `Read`, one ranged GET at a time, from a thread that may block.
//!
//! The row parser is synchronous (`BufRead`), and so are gunzip and the `csv` crate; the object store is async.
//! The import runs on a blocking thread and fetches each range through the runtime's handle, so at most one
//! range (plus the parser's bounded buffers) is in memory whatever the object's size.

use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;
use tokio::runtime::Handle;
use tributary_core::ports::{ObjectStore, PortError};

/// Bytes of an object from a start offset to its end, fetched `chunk` bytes at a time.
pub struct RangeReader<'a, O> {
    store: &'a O,
    handle: &'a Handle,
    key: &'a str,
    pos: u64,
    size: u64,
    chunk: u64,
    buf: Vec<u8>,
    at: usize,
}

impl<'a, O: ObjectStore> RangeReader<'a, O> {
    pub fn new(store: &'a O, handle: &'a Handle, key: &'a str, start: u64, size: u64, chunk: u64) -> Self {
        RangeReader { store, handle, key, pos: start, size, chunk: chunk.max(1), buf: Vec::new(), at: 0 }
    }
}

/// A port error as an I/O error; the message names no key (keys can carry personal data).
pub fn port_io(e: PortError) -> io::Error {
    let kind = if e.is_retryable() { io::ErrorKind::Interrupted } else { io::ErrorKind::Other };
    io::Error::new(kind, StoreError(e.is_retryable()))
}

/// The object store failed while the file was read; `true` when trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("the object store failed while reading the file")]
pub struct StoreError(pub bool);

impl<O: ObjectStore> Read for RangeReader<'_, O> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.size || out.is_empty() {
                return Ok(0);
            }
            let end = self.pos.saturating_add(self.chunk).min(self.size);
            let bytes = self
                .handle
                .block_on(self.store.get_range(self.key, self.pos, Some(end)))
                .map_err(port_io)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the file is gone"))?;
            if bytes.is_empty() {
                // Shorter than announced (replaced by a smaller object): its end.
                self.size = self.pos;
                return Ok(0);
            }
            self.pos += bytes.len() as u64;
            self.buf = bytes;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Read buffer between the parser and the reader (or gunzip).
const BUF_BYTES: usize = 64 * 1024;

/// The file from `offset` (in decompressed bytes for gzip) as a `BufRead`. A plain file starts with a ranged GET
/// at `offset`; a gzip file is decompressed from its start and the first `offset` bytes skipped, since a deflate
/// stream cannot be entered mid-way.
pub fn open<'a, O: ObjectStore>(
    store: &'a O,
    handle: &'a Handle,
    key: &'a str,
    size: u64,
    gzip: bool,
    offset: u64,
    chunk: u64,
) -> io::Result<Box<dyn BufRead + 'a>> {
    if !gzip {
        let r = RangeReader::new(store, handle, key, offset, size, chunk);
        return Ok(Box::new(BufReader::with_capacity(BUF_BYTES, r)));
    }
    let raw = BufReader::with_capacity(BUF_BYTES, RangeReader::new(store, handle, key, 0, size, chunk));
    let mut decoded = BufReader::with_capacity(BUF_BYTES, MultiGzDecoder::new(raw));
    let skipped = io::copy(&mut (&mut decoded).take(offset), &mut io::sink())?;
    if skipped < offset {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than its checkpoint"));
    }
    Ok(Box::new(decoded))
}
