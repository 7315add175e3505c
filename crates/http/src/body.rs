//! Reading a request or answer body whole, bounded in size and in time:
//! the one way meta169 reads a body a guest or a remote service sends.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It is larger than the limit (read stops at the limit).
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// It did not arrive in time.
    #[error("the body was not received within {0:?}")]
    TooSlow(Duration),
    /// The connection broke while reading it.
    #[error("reading the body failed: {0}")]
    Broken(String),
}

/// Read `body` whole: at most `limit` bytes, within `timeout`.
pub async fn read_bounded<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, BodyError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(BodyError::TooSlow(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
}

/// [`read_bounded`] for an answer of reqwest's client.
pub async fn read_response_bounded(
    response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    read_bounded(http::Response::from(response).into_body(), limit, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::{Body, Frame, SizeHint};
    use http_body_util::Full;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that sends 1 KiB frames forever, or (`silent`) nothing ever.
    struct Endless {
        silent: bool,
    }

    impl Body for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.silent {
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    #[tokio::test]
    async fn size_and_time_are_bounded() {
        let second = Duration::from_secs(1);
        let small = read_bounded(Full::new(Bytes::from_static(b"hello")), 5, second).await;
        assert_eq!(&small.unwrap()[..], b"hello");
        let large = read_bounded(Full::new(Bytes::from_static(b"hello!")), 5, second).await;
        assert!(matches!(large, Err(BodyError::TooLarge(5))));
        // A body that never ends is cut at the limit, not read forever.
        let cut = read_bounded(Endless { silent: false }, 4096, Duration::from_secs(30)).await;
        assert!(matches!(cut, Err(BodyError::TooLarge(4096))));
        // One that never sends is cut at the timeout.
        let slow = read_bounded(Endless { silent: true }, 4096, Duration::from_millis(50)).await;
        assert!(matches!(slow, Err(BodyError::TooSlow(_))));
    }
}
