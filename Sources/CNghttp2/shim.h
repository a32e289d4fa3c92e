// libnghttp2 (Debian libnghttp2-dev 1.52) for Swift: the header as is. ProxyCore/HTTP2/H2Session.swift is the
// only file that uses it.
#include <nghttp2/nghttp2.h>
