//! gRPC-web's wire format: length-prefixed frames (1 flag byte, 4-byte big-endian length, the
//! payload), a trailer frame carrying the status as HTTP/1-style header lines, and the
//! `grpc-timeout` header.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::code::{CallError, Code};

/// Flag of a data frame.
pub(crate) const DATA: u8 = 0x00;
/// Flag of the trailer frame.
pub(crate) const TRAILER: u8 = 0x80;
/// Flag bit of a compressed frame.
const COMPRESSED: u8 = 0x01;
/// Bytes before a frame's payload.
pub(crate) const HEADER_LEN: usize = 5;

/// The one message of a request body: exactly one uncompressed data frame.
///
/// # Errors
///
/// `invalid_argument` naming what is wrong: no frame, a truncated frame, a compressed or
/// trailer frame, or bytes after the frame.
pub(crate) fn request_message(body: &[u8]) -> Result<&[u8], CallError> {
    let bad = |why: &str| {
        CallError::new(
            Code::InvalidArgument,
            format!("the request body is not one gRPC-web message: {why}; send one uncompressed data frame (application/grpc-web+proto)"),
        )
    };
    let (header, rest) = body
        .split_first_chunk::<HEADER_LEN>()
        .ok_or_else(|| bad("it is shorter than a frame header"))?;
    let [flag, len @ ..] = *header;
    if flag & TRAILER != 0 {
        return Err(bad("it starts with a trailer frame"));
    }
    if flag & COMPRESSED != 0 {
        return Err(bad(
            "the frame is compressed, and this server takes identity encoding only",
        ));
    }
    if flag != DATA {
        return Err(bad("the frame's flag byte is unknown"));
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    let (message, after) = rest
        .split_at_checked(len)
        .ok_or_else(|| bad("the frame is cut short"))?;
    if !after.is_empty() {
        return Err(bad("more bytes follow the first frame"));
    }
    Ok(message)
}

/// A data frame carrying `message`.
pub(crate) fn data(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + message.len());
    put_header(&mut out, DATA, message.len());
    out.put_slice(message);
    out.freeze()
}

/// A data frame whose payload is written by `write`, which writes exactly `len` bytes.
pub(crate) fn data_with(len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    put_header(&mut out, DATA, len);
    write(&mut out);
    out.freeze()
}

fn put_header(out: &mut BytesMut, flag: u8, len: usize) {
    out.put_u8(flag);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// The trailer frame of a call that ends with `code` (0 for OK) and `message`.
pub(crate) fn trailer(code: u8, message: &str) -> Bytes {
    let mut lines = format!("grpc-status:{code}\r\n");
    if !message.is_empty() {
        lines.push_str("grpc-message:");
        lines.push_str(&encode_message(message));
        lines.push_str("\r\n");
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + lines.len());
    put_header(&mut out, TRAILER, lines.len());
    out.put_slice(lines.as_bytes());
    out.freeze()
}

/// `grpc-message` as gRPC writes it: percent-encoded outside printable ASCII (and `%` itself),
/// so any text fits a header line and a trailer frame.
pub(crate) fn encode_message(message: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Reads a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
///
/// # Errors
///
/// `invalid_argument` saying what the header must look like.
pub(crate) fn parse_timeout(value: &str) -> Result<Duration, CallError> {
    let bad = || {
        CallError::new(
            Code::InvalidArgument,
            "the grpc-timeout header must be 1 to 8 digits and a unit (H, M, S, m, u or n), e.g. 900000m",
        )
    };
    let split = value.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = value.split_at_checked(split).ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_request_is_one_data_frame() {
        assert_eq!(request_message(&framed(0, b"abc")).unwrap(), b"abc");
        assert_eq!(request_message(&framed(0, b"")).unwrap(), b"");
        let cases: [(Vec<u8>, &str); 6] = [
            (Vec::new(), "shorter than a frame header"),
            (framed(0x80, b"grpc-status:0"), "trailer frame"),
            (framed(0x01, b"abc"), "compressed"),
            (framed(0x02, b"abc"), "flag byte is unknown"),
            (framed(0, b"abc")[..6].to_vec(), "cut short"),
            (
                [framed(0, b"a"), framed(0, b"b")].concat(),
                "more bytes follow",
            ),
        ];
        for (body, why) in cases {
            let err = request_message(&body).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument);
            assert!(err.msg.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn trailers_carry_the_status_and_an_encoded_message() {
        let frame = trailer(16, "the token is revoked (peer \"é\") 100%");
        assert_eq!(frame[0], TRAILER);
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        let text = std::str::from_utf8(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(text.len(), len);
        assert_eq!(
            text,
            "grpc-status:16\r\ngrpc-message:the token is revoked (peer \"%C3%A9\") 100%25\r\n"
        );
        assert_eq!(&trailer(0, "")[HEADER_LEN..], b"grpc-status:0\r\n");
    }

    #[test]
    fn timeouts_read_every_unit_and_refuse_the_rest() {
        let ok = [
            ("900000m", Duration::from_secs(900)),
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("4u", Duration::from_micros(4)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_timeout(text).unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "m",
            "123",
            "123456789m",
            "-1m",
            "1.5S",
            "10x",
            "1 m",
            "１m",
        ] {
            assert_eq!(
                parse_timeout(bad).unwrap_err().code,
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// Any body is read as one message or refused, never a panic, and a message read is
        /// exactly what a frame around it held.
        #[test]
        fn arbitrary_bodies_are_read_or_refused(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(message) = request_message(&body) {
                prop_assert_eq!(framed(0, message), body);
            }
        }

        /// A data frame reads back as its message.
        #[test]
        fn data_frames_round_trip(message in proptest::collection::vec(any::<u8>(), 0..256)) {
            let framed = data(&message);
            prop_assert_eq!(request_message(&framed).unwrap(), message.as_slice());
        }

        /// Any message fits a header line once encoded.
        #[test]
        fn encoded_messages_are_printable_ascii(message in "\\PC{0,64}") {
            let encoded = encode_message(&message);
            prop_assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert!(axum::http::HeaderValue::from_str(&encoded).is_ok());
        }
    }
}
