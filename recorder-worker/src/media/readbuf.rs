//! The read buffer (`ReadBuffer`) that the splitters read ffmpeg's output into.
//!
//! ffmpeg's output is read straight into a block of memory, and the splitters cut whole units
//! off it as views (`BytesMut::split_to`): media bytes are never copied in user space between
//! the pipe and the upload.
//!
//! A unit keeps its block alive until every upload holding it is done. Blocks the buffer has
//! moved on from are kept and reused once their units are gone, so their pages stay mapped:
//! fresh blocks from the allocator were faulted in page by page, and glibc trimmed the heap
//! whenever an upload chunk's blocks were freed together.

use bytes::BytesMut;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};

/// A block's size: three or four fragments of a 2 Mbit/s stream, and under glibc's mmap
/// threshold (`main.rs`), so a block that is freed goes back to the heap.
const BLOCK: usize = 960 * 1024;

/// A read is not started with less room than this.
const MIN_READ: usize = 64 * 1024;

/// Between units, a block with less room than this is left for the next: a fragment of a
/// 2 Mbit/s stream would not fit, and moving it later would copy what it has.
const UNIT_ROOM: usize = 256 * 1024;

/// Blocks kept for reuse, at most. More are in use only while the store is slow and the spool
/// holds media; those are freed when it drains.
const RETIRED_MAX: usize = 16;

#[derive(Default)]
pub struct ReadBuffer {
    data: BytesMut,
    /// Blocks moved on from, oldest first; each is reusable once no unit holds it.
    retired: VecDeque<BytesMut>,
}

impl ReadBuffer {
    /// Makes room for a read after what the buffer holds. Between units a nearly full block
    /// is simply left; within a unit, the part already read (usually a fraction of a block)
    /// moves to the next block. A unit larger than a block doubles its room each time, so it
    /// is copied only a few times.
    pub fn make_room(&mut self) -> &mut BytesMut {
        let room = self.data.capacity() - self.data.len();
        if room < MIN_READ || (self.data.is_empty() && room < UNIT_ROOM) {
            let needed = BLOCK.max(2 * self.data.len());
            let reusable = self
                .retired
                .iter_mut()
                .position(|block| block.try_reclaim(needed));
            let mut block = match reusable {
                Some(i) => self.retired.remove(i).expect("found above"),
                None => BytesMut::with_capacity(needed),
            };
            block.extend_from_slice(&self.data);
            let mut old = std::mem::replace(&mut self.data, block);
            old.clear();
            if old.capacity() > 0 {
                if self.retired.len() == RETIRED_MAX {
                    self.retired.pop_front();
                }
                self.retired.push_back(old);
            }
        }
        &mut self.data
    }
}

impl Deref for ReadBuffer {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.data
    }
}

impl DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_views_of_the_block_and_the_rest_moves_on() {
        let mut buffer = ReadBuffer::default();
        buffer.make_room();
        assert_eq!(buffer.capacity(), BLOCK);
        let block_start = buffer.as_ptr();

        // Two reads fill most of the block; a unit is cut off between them.
        buffer.extend_from_slice(&[1; 600 * 1024]);
        let unit = buffer.split_to(500 * 1024);
        assert_eq!(
            unit.as_ptr(),
            block_start,
            "a view of the block, not a copy"
        );
        buffer.make_room();
        buffer.extend_from_slice(&vec![2; 330 * 1024]);
        assert_eq!(
            buffer.as_ptr(),
            block_start.wrapping_add(500 * 1024),
            "the next read lands in the same block"
        );

        // Less than one read's room is left: the incomplete rest moves to a new block, since a
        // unit still holds the old one.
        let rest = buffer.to_vec();
        buffer.make_room();
        assert!(buffer[..] == rest[..], "the rest moved whole");
        assert!(buffer.capacity() - buffer.len() >= MIN_READ);
        let second_block = buffer.as_ptr();
        assert_ne!(second_block, block_start);
        assert!(
            unit.len() == 500 * 1024 && unit.iter().all(|&b| b == 1),
            "earlier units are untouched"
        );

        // Once that unit is gone, the first block is reused for the next move.
        drop(unit);
        let next = buffer.len();
        buffer.extend_from_slice(&vec![3; BLOCK - next - 1024]);
        let _held = buffer.split_to(BLOCK - 2048);
        let rest = buffer.to_vec();
        buffer.make_room();
        assert_eq!(buffer.as_ptr(), block_start, "the first block again");
        assert!(buffer[..] == rest[..], "the rest moved whole");
    }

    #[test]
    fn between_units_a_block_too_full_for_the_next_is_left() {
        let mut buffer = ReadBuffer::default();
        buffer.make_room();
        let first = buffer.as_ptr();
        buffer.extend_from_slice(&vec![1; BLOCK - UNIT_ROOM - 1024]);
        let _unit = buffer.split();
        buffer.make_room();
        assert_eq!(
            buffer.as_ptr(),
            first.wrapping_add(BLOCK - UNIT_ROOM - 1024)
        );
        buffer.extend_from_slice(&[2; 2048]);
        let _unit = buffer.split();
        buffer.make_room();
        assert!(buffer.is_empty());
        assert_eq!(
            buffer.capacity(),
            BLOCK,
            "a whole fresh block, nothing copied"
        );
        assert!(buffer.as_ptr() < first || buffer.as_ptr() >= first.wrapping_add(BLOCK));
    }

    #[test]
    fn a_unit_larger_than_a_block_doubles_its_room() {
        let mut buffer = ReadBuffer::default();
        let mut moves = 0;
        while buffer.len() < 4 * BLOCK {
            let before = buffer.as_ptr();
            buffer.make_room();
            if buffer.as_ptr() != before {
                moves += 1;
            }
            let room = buffer.capacity() - buffer.len();
            buffer.extend_from_slice(&vec![7; room.min(MIN_READ)]);
        }
        // The first block, then 2×, 4×, 8× the length at each move.
        assert!(moves <= 4, "{moves} moves for a unit of four blocks");
    }
}
