//! The status codes ringserve sends, each with its status line and a fixed error page.

/// Declares [`Status`] from one table, so a code, its reason phrase and its page can never
/// disagree.
macro_rules! statuses {
    ($($name:ident = $code:literal $reason:literal,)*) => {
        /// A response status. Only the codes this server sends exist.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Status {
            $($name,)*
        }

        impl Status {
            pub fn code(self) -> u16 {
                match self {
                    $(Status::$name => $code,)*
                }
            }

            /// `HTTP/1.1 <code> <reason>\r\n`. Responses always name 1.1, the highest
            /// version this server speaks (RFC 9110 §6.2).
            pub fn line(self) -> &'static str {
                match self {
                    $(Status::$name => concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n"),)*
                }
            }

            /// A small HTML body for responses that carry no representation.
            pub fn page(self) -> &'static [u8] {
                match self {
                    $(Status::$name => concat!(
                        "<!DOCTYPE html>\n<html><head><title>", $code, " ", $reason,
                        "</title></head>\n<body><h1>", $code, " ", $reason, "</h1></body></html>\n"
                    ).as_bytes(),)*
                }
            }
        }
    };
}

statuses! {
    Ok = 200 "OK",
    NoContent = 204 "No Content",
    PartialContent = 206 "Partial Content",
    MovedPermanently = 301 "Moved Permanently",
    NotModified = 304 "Not Modified",
    BadRequest = 400 "Bad Request",
    Forbidden = 403 "Forbidden",
    NotFound = 404 "Not Found",
    MethodNotAllowed = 405 "Method Not Allowed",
    RequestTimeout = 408 "Request Timeout",
    PreconditionFailed = 412 "Precondition Failed",
    ContentTooLarge = 413 "Content Too Large",
    UriTooLong = 414 "URI Too Long",
    RangeNotSatisfiable = 416 "Range Not Satisfiable",
    RequestHeaderFieldsTooLarge = 431 "Request Header Fields Too Large",
    InternalServerError = 500 "Internal Server Error",
    NotImplemented = 501 "Not Implemented",
    ServiceUnavailable = 503 "Service Unavailable",
    HttpVersionNotSupported = 505 "HTTP Version Not Supported",
}
