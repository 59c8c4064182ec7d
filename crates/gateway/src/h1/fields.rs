//! An upstream response's header fields passed on to the client as bytes.
//!
//! Most responses need nothing of their fields but to pass them on: no `Trailer` to announce
//! trailers by, a `Connection` that names only this hop's own fields, none of the fields the
//! gateway sets itself. Their fields are copied once into wire form ([`UpstreamFields`]) and
//! written as they are by the gateway's own HTTP/1.1 server side, instead of a `HeaderMap`
//! built (a name parsed, a value checked, a hash per field) and encoded again — about a tenth
//! of a request's instructions (callgrind, `bench/run-instructions.sh`). hyper's server sides
//! (HTTP/2, and HTTP/1.1 after a handover) get them as a map ([`UpstreamFields::append_to`]).

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::head::{Framing, MAX_HEADERS};
use super::put_field;
use crate::request::{PIN_HEADER, VERSION_GONE_HEADER};

/// Room left after the upstream's fields for the gateway's: its version, a session pin (a
/// cookie and the same token as a field, about 200 bytes) and an anonymous id's cookie. Less
/// made every pinned response grow its buffer once more, a copy of all its fields.
const OWN_FIELDS_ROOM: usize = 320;

/// What a field of a response head is to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `Connection`: this hop's, and it may name others.
    Connection,
    /// `Transfer-Encoding`: this hop's framing.
    TransferEncoding,
    /// `Content-Length`.
    ContentLength,
    /// Another field of this hop only (`Keep-Alive`, `TE`, `Upgrade`, `Proxy-Connection`).
    HopByHop,
    /// `Date`.
    Date,
    /// `Trailer`, or a field the gateway sets on responses itself: the response phase and the
    /// writer need these in a map.
    NeedsMap,
    /// Any other field, passed on as it came.
    Plain,
}

impl FieldKind {
    /// The kind of the field named `name`, in any case.
    pub fn of(name: &[u8]) -> FieldKind {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => FieldKind::HopByHop,
            4 if is("date") => FieldKind::Date,
            7 if is("upgrade") => FieldKind::HopByHop,
            7 if is("trailer") => FieldKind::NeedsMap,
            10 if is("connection") => FieldKind::Connection,
            10 if is("keep-alive") => FieldKind::HopByHop,
            14 if is("content-length") => FieldKind::ContentLength,
            16 if is("proxy-connection") => FieldKind::HopByHop,
            17 if is("transfer-encoding") => FieldKind::TransferEncoding,
            _ if is(crate::headers::X_CANARY_VERSION.as_str()) || is(PIN_HEADER) || is(VERSION_GONE_HEADER) => {
                FieldKind::NeedsMap
            }
            _ => FieldKind::Plain,
        }
    }
}

/// An upstream's header fields for the client, in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFields {
    /// `name: value\r\n` lines in the upstream's order, names in lower case, without this
    /// hop's fields, then the gateway's own ([`UpstreamFields::push`]). The body's framing is
    /// among them only as a `content-length` the writer frames by ([`UpstreamFields::length`]),
    /// or that of a response without a body.
    wire: BytesMut,
    length: Option<u64>,
    has_date: bool,
}

impl UpstreamFields {
    /// The fields of `fields` for a body framed by `framing`; `kinds` are theirs, in order.
    pub fn copied(fields: &[httparse::Header<'_>], kinds: &[FieldKind], framing: Framing) -> UpstreamFields {
        // With room for the gateway's own fields, which follow.
        let room = fields.iter().map(|f| f.name.len() + f.value.len() + 4).sum::<usize>() + OWN_FIELDS_ROOM;
        let mut wire = BytesMut::with_capacity(room);
        let mut has_date = false;
        let mut length_written = false;
        for (field, kind) in fields.iter().zip(kinds) {
            match (kind, framing) {
                (FieldKind::Connection | FieldKind::TransferEncoding | FieldKind::HopByHop, _) => continue,
                // A response without a body keeps the length it names (`HEAD`, `304`).
                (FieldKind::ContentLength, Framing::Empty) => {}
                // One number passes as it came; a list of the same number (`7, 7`) as one.
                (FieldKind::ContentLength, Framing::Length(_)) if !length_written && is_one_number(field.value) => {
                    length_written = true;
                }
                (FieldKind::ContentLength, Framing::Length(length)) if !length_written => {
                    length_written = true;
                    let _ = write!(wire, "content-length: {length}\r\n");
                    continue;
                }
                (FieldKind::ContentLength, _) => continue,
                (FieldKind::Date, _) => has_date = true,
                (FieldKind::NeedsMap | FieldKind::Plain, _) => {}
            }
            let name_starts = wire.len();
            put_field(&mut wire, field.name.as_bytes(), field.value);
            wire[name_starts..name_starts + field.name.len()].make_ascii_lowercase();
        }
        let length = match framing {
            Framing::Length(length) => Some(length),
            _ => None,
        };
        UpstreamFields { wire, length, has_date }
    }

    /// Adds a field after the upstream's; `name` is in lower case. The upstream's fields hold
    /// none of the names the gateway sets ([`FieldKind::NeedsMap`]), so this adds and replaces
    /// alike.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        put_field(&mut self.wire, name.as_bytes(), value);
    }

    /// The lines to write after the status line.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The body's length, when the lines say it.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// Whether the lines hold a `date`.
    pub fn has_date(&self) -> bool {
        self.has_date
    }

    /// Appends the fields to `headers`, for a server side that writes from a map.
    pub fn append_to(&self, headers: &mut HeaderMap) {
        let mut head = BytesMut::with_capacity(self.wire.len() + 2);
        head.put_slice(&self.wire);
        head.put_slice(b"\r\n");
        let head = head.freeze();
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // Lines this module wrote from fields httparse had read: they parse again.
        let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&head, &mut fields) else {
            return;
        };
        headers.reserve(fields.len());
        for field in fields.iter() {
            let value = head.slice_ref(field.value);
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(field.name.as_bytes()), HeaderValue::from_maybe_shared(value))
            {
                headers.append(name, value);
            }
        }
    }
}

fn is_one_number(value: &[u8]) -> bool {
    let digits = crate::request::trim(value);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(text: &str, framing: Framing) -> UpstreamFields {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(text.as_bytes(), &mut fields) else {
            panic!("{text:?}")
        };
        let kinds: Vec<FieldKind> = fields.iter().map(|f| FieldKind::of(f.name.as_bytes())).collect();
        UpstreamFields::copied(fields, &kinds, framing)
    }

    #[test]
    fn names_are_known_in_any_case() {
        assert_eq!(FieldKind::of(b"Content-Length"), FieldKind::ContentLength);
        assert_eq!(FieldKind::of(b"KEEP-ALIVE"), FieldKind::HopByHop);
        assert_eq!(FieldKind::of(b"Trailer"), FieldKind::NeedsMap);
        assert_eq!(FieldKind::of(b"X-Canary-Version"), FieldKind::NeedsMap);
        assert_eq!(FieldKind::of(PIN_HEADER.as_bytes()), FieldKind::NeedsMap);
        assert_eq!(FieldKind::of(b"content-type"), FieldKind::Plain);
        assert_eq!(FieldKind::of(b"connectionx"), FieldKind::Plain);
    }

    #[test]
    fn this_hop_s_fields_stay_here_and_the_rest_pass_in_order_in_lower_case() {
        let text = "Server: nginx\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 7, 7\r\n\
                    Date: Thu, 03 Dec 2026 12:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let fields = fields_of(text, Framing::Length(7));
        let wire = "server: nginx\r\ncontent-length: 7\r\ndate: Thu, 03 Dec 2026 12:00:00 GMT\r\n\
                    set-cookie: a=1\r\nset-cookie: b=2\r\n";
        assert_eq!(std::str::from_utf8(fields.wire()).unwrap(), wire);
        assert_eq!((fields.length(), fields.has_date()), (Some(7), true));
        let mut fields = fields;
        fields.push("set-cookie", b"canary_pin=p");
        assert!(fields.wire().ends_with(b"set-cookie: b=2\r\nset-cookie: canary_pin=p\r\n"), "the gateway's after");
        let mut map = HeaderMap::new();
        fields.append_to(&mut map);
        assert_eq!(map.get_all("set-cookie").iter().collect::<Vec<_>>(), ["a=1", "b=2", "canary_pin=p"]);
        assert_eq!((map["server"].as_bytes(), map.len()), (&b"nginx"[..], 6));
    }

    #[test]
    fn the_framing_is_the_writer_s_unless_there_is_no_body() {
        let chunked = fields_of("Transfer-Encoding: chunked\r\nContent-Length: 3\r\nx-a: 1\r\n\r\n", Framing::Chunked);
        assert_eq!((chunked.wire(), chunked.length()), (&b"x-a: 1\r\n"[..], None));
        let to_head = fields_of("Content-Length: 9\r\n\r\n", Framing::Empty);
        assert_eq!((to_head.wire(), to_head.length()), (&b"content-length: 9\r\n"[..], None));
    }
}
