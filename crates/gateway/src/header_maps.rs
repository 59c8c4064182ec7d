//! Header maps each worker thread keeps for its next requests and responses.
//!
//! A map is two allocations, and the one for a response's fields plus the gateway's own is
//! larger than what the allocator keeps per thread (about 1 KB): each request took it through
//! the allocator's slow path and back, two maps about a thousand instructions (callgrind,
//! `bench/run-instructions.sh`). A map given back is cleared, keeping its room, and handed out
//! again.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps a worker keeps at most: more than the requests one worker has in flight at once
/// under steady load.
const KEPT: usize = 64;
/// A map that grew past this many fields is not kept: a rare large head does not stay.
const LARGEST_KEPT: usize = 48;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields` fields, kept from an earlier request when there is one.
pub fn take(fields: usize) -> HeaderMap {
    let mut map = SPARE.with(|spare| spare.borrow_mut().pop()).unwrap_or_default();
    map.reserve(fields);
    map
}

/// Keeps `map`'s room for a later [`take`] on this thread.
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST_KEPT {
        return;
    }
    map.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::HOST;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = take(9);
        let room = map.capacity();
        assert!(room >= 9);
        map.insert(HOST, HeaderValue::from_static("shop"));
        give(map);
        let again = take(4);
        assert!(again.is_empty(), "nothing of the last request is left");
        assert_eq!(again.capacity(), room, "its room is kept");
    }

    #[test]
    fn a_grown_map_is_not_kept() {
        while SPARE.with(|spare| spare.borrow_mut().pop()).is_some() {}
        give(HeaderMap::with_capacity(500));
        give(HeaderMap::new());
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), 0);
    }
}
