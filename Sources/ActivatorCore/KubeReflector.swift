// LIST then WATCH of one Kubernetes collection, with client-go's reflector semantics, on the activator's loop:
// the LIST's resourceVersion starts the WATCH; every event and BOOKMARK moves the version on; a watch that
// ends (its timeoutSeconds, a dropped connection) is resumed from the last version; 410 Gone (HTTP status or
// an ERROR event carrying a Status) means that version is too old: list again. Failures back off
// exponentially; meanwhile the owner keeps the last state it was given. Nothing here waits on the network;
// a LIST comes in pages (`listPageSize`), each parsed on the loop, which serves other events between them.
//
// | state     | on                                   | then                                     |
// |-----------|--------------------------------------|------------------------------------------|
// | resolving | host resolved / failed               | the pending request / back-off           |
// | listing   | 200 + a page, `continue` set         | the next page (items kept)               |
// | listing   | 200 + the last page                  | onReplace(all items), watching from RV   |
// | listing   | any error                            | back-off, list again                     |
// | watching  | ADDED / MODIFIED / DELETED           | onEvent, RV = the object's               |
// | watching  | BOOKMARK                             | RV = the bookmark's                      |
// | watching  | ERROR 410, HTTP 410                  | back-off, list again                     |
// | watching  | another ERROR event                  | back-off, list again (as client-go)      |
// | watching  | stream ended (≥ 1 s, or had events)  | watch again from RV at once              |
// | watching  | any other error or an empty short one| back-off, watch again from RV            |
// | watching  | an unreadable event line             | back-off, list again                     |
// The back-off doubles per failure and starts over only after `backoffResetMs` without one (client-go's
// backoff manager), so an API that fails right after every success (a 410 on each fresh LIST's version, a
// watch that errors at once) cannot make us spin.
import KnativeWire
import ProxyCore

/// Timing of the Kubernetes watches (tests shorten it).
public struct KubeWatchSettings: Sendable {
    /// First back-off after a failure, doubled per failure up to `backoffMaxMs` (client-go: 800 ms, 30 s); it
    /// starts over after `backoffResetMs` without a failure (client-go: 2 min).
    public var backoffInitialMs: Int64 = 800
    public var backoffMaxMs: Int64 = 30_000
    public var backoffResetMs: Int64 = 120_000
    /// `timeoutSeconds` of each WATCH: the API ends the stream then, and it is resumed (client-go: 5–10 min).
    public var watchTimeoutSeconds = 300
    /// A LIST page must be answered in full within this time.
    public var listTimeoutMs: Int64 = 60_000
    /// Items per LIST page (`limit`, client-go's pager: 500): a large collection comes in pages, each parsed on
    /// its own, so the loop serves traffic between them instead of pausing for one huge parse.
    public var listPageSize = 500

    public init() {}
}

/// One collection: `path` (e.g. `/apis/serving.knative.dev/v1/revisions`) with an optional selector query.
final class KubeReflector: KubeGetDelegate {
    enum Phase: Equatable { case idle, listing, watching }

    let api: KubeAPIEndpoint
    let path: String
    /// `labelSelector=…` / `fieldSelector=…` (encoded), or "".
    let selector: String
    /// The collection's name in logs (`revisions`, `private endpoints`).
    let what: String
    private let settings: KubeWatchSettings
    private unowned(unsafe) let loop: EventLoop  // the activator owns us on this loop, which outlives both

    /// A LIST's items (the whole collection: the owner drops what is not among them).
    var onReplace: ([JSON]) -> Void = { _ in }
    /// One watch event's object (ADDED, MODIFIED or DELETED).
    var onEvent: (KubeWatchEvent.Kind, JSON) -> Void = { _, _ in }

    private(set) var phase = Phase.idle
    private(set) var resourceVersion = ""
    /// LISTs done (the first one means the owner has the collection).
    private(set) var listCount = 0
    /// The current request, if any; answers of any other are stale.
    private var current: KubeGet?
    private var status = 0
    private var listBody: [UInt8] = []
    /// The pages of the LIST in progress: their items, the first page's version, the next page's token.
    private var pagedItems: [JSON] = []
    private var pagedVersion = ""
    private var continueToken = ""
    private var lines = WatchLineSplitter()
    private var watchStartMs: Int64 = 0
    /// Events (bookmarks included) the current watch delivered.
    private var watchEvents = 0
    private var backoffMs: Int64
    private var failuresInARow = 0
    private var lastFailureMs = Int64.min / 2
    private var retryTimer: LoopTimer?
    /// Bounds the current request's host lookup (kept alive here; the loop's wheel does not own its entries).
    private var lookupTimer: LoopTimer?
    private var isStopped = false
    static let maxListBytes = 256 << 20
    static let maxErrorBytes = 64 << 10

    init(
        api: KubeAPIEndpoint, path: String, selector: String, what: String, settings: KubeWatchSettings,
        loop: EventLoop
    ) {
        self.api = api
        self.path = path
        self.selector = selector
        self.what = what
        self.settings = settings
        self.loop = loop
        backoffMs = settings.backoffInitialMs
    }

    func start() { list() }

    func stop() {
        isStopped = true
        current?.cancel()
        current = nil
        if let retryTimer { loop.cancel(retryTimer) }
        if let lookupTimer { loop.cancel(lookupTimer) }
    }

    // MARK: - Requests

    private var listTarget: String {
        var query = "limit=\(settings.listPageSize)"
        if !continueToken.isEmpty { query += "&continue=" + Self.encode(continueToken) }
        if !selector.isEmpty { query += "&" + selector }
        return api.pathPrefix + path + "?" + query
    }

    private var watchTarget: String {
        var query = "watch=1&allowWatchBookmarks=true&resourceVersion=\(Self.encode(resourceVersion))"
        query += "&timeoutSeconds=\(settings.watchTimeoutSeconds)"
        if !selector.isEmpty { query += "&" + selector }
        return api.pathPrefix + path + "?" + query
    }

    /// Lists from the first page (a failed page, an expired token too: the pages are one snapshot).
    private func list() {
        pagedItems = []
        pagedVersion = ""
        continueToken = ""
        listPage()
    }

    private func listPage() {
        phase = .listing
        listBody = []
        send(listTarget, timeoutMs: settings.listTimeoutMs)
    }

    private func watch() {
        phase = .watching
        lines.reset()
        listBody = []  // an error answer's body is collected here: one answer's only
        watchEvents = 0
        watchStartMs = loop.nowMs
        // The API ends the stream at timeoutSeconds; a stream that outlives that by a minute is stuck.
        send(watchTarget, timeoutMs: Int64(settings.watchTimeoutSeconds) * 1000 + 60_000)
    }

    private func send(_ target: String, timeoutMs: Int64) {
        status = 0
        let get = KubeGet(target, api: api, delegate: self)
        current = get
        let phaseAtStart = phase
        // One deadline for the lookup and the exchange: a resolver that does not answer (an unreachable DNS
        // server) fails the request like a silent API, and a late answer is dropped.
        let deadlineMs = loop.nowMs + timeoutMs
        var lookedUp = false
        let lookupTimer = LoopTimer { [weak self, weak get] _ in
            guard let self, let get, self.current === get, !lookedUp else { return }
            get.cancel()
            self.current = nil
            self.failed("no address for \(self.api.host) within \(timeoutMs) ms")
        }
        if let previous = self.lookupTimer { loop.cancel(previous) }  // unlinked before it is let go
        self.lookupTimer = lookupTimer
        loop.schedule(lookupTimer, at: deadlineMs)
        // The API's host name (a sidecar's `localhost`, a Service) is looked up again for every request, off
        // the loop; an IP literal is used at once.
        HostResolver.resolve(api.host, port: api.port, on: loop) { [weak self, weak get] result in
            guard let self, let get, self.current === get, self.phase == phaseAtStart else { return }
            lookedUp = true
            self.loop.cancel(lookupTimer)
            switch result {
            case .success(let addresses):
                get.start(address: addresses[0], loop: self.loop, deadlineMs: deadlineMs)
            case .failure(let error):
                self.current = nil
                self.failed("\(error)")
            }
        }
    }

    // MARK: - Answers

    func kubeGet(_ get: KubeGet, status: Int) {
        guard get === current else { return }
        self.status = status
    }

    func kubeGet(_ get: KubeGet, body: UnsafeRawBufferPointer) {
        guard get === current else { return }
        if phase == .listing || status != 200 {
            let limit = status == 200 ? Self.maxListBytes : Self.maxErrorBytes
            if listBody.count + body.count > limit {
                get.cancel()
                current = nil
                return failed("answer of more than \(limit) bytes")
            }
            listBody.append(contentsOf: body)
            return
        }
        let received: [String]
        do { received = try lines.feed(body) } catch {
            get.cancel()
            current = nil
            return failed("\(error)")
        }
        for line in received {
            handle(line)
            guard get === current else { return }  // the event ended this stream (410: listing again)
        }
    }

    func kubeGet(_ get: KubeGet, endedWith error: String?) {
        guard get === current else { return }
        current = nil
        if let error { return failed(error) }
        if status != 200 {
            let statusObject = (try? JSON.parse(String(decoding: listBody, as: UTF8.self))).flatMap(KubeStatus.parse)
            // A LIST asks for the latest version and is never too old: a 410 there (an expired `continue` token)
            // is an ordinary failure, and the list starts again from its first page.
            if phase == .watching && (status == 410 || statusObject?.isGone == true) {
                return failed("resourceVersion \(resourceVersion) is gone (410)", relist: true, routine: true)
            }
            return failed("HTTP \(status)" + (statusObject.map { ": \($0.message)" } ?? ""))
        }
        switch phase {
        case .listing:
            let parsed: KubeList
            do {
                let text = String(decoding: listBody, as: UTF8.self)
                listBody = []
                let json: JSON
                do { json = try JSON.parse(text) } catch { throw JSONFieldError("invalid JSON (\(error))") }
                parsed = try KubeList.parse(json)
            } catch {
                return failed("list: \(error)")
            }
            // Every page belongs to the first one's snapshot: its version is the list's.
            if continueToken.isEmpty { pagedVersion = parsed.resourceVersion }
            pagedItems += parsed.items
            continueToken = parsed.continueToken
            if !continueToken.isEmpty { return listPage() }  // the loop serves other events before it comes
            let items = pagedItems
            pagedItems = []
            resourceVersion = pagedVersion
            listCount += 1
            Log.debug("kube: listed \(what): \(items.count) at resourceVersion \(resourceVersion)")
            onReplace(items)
            if !isStopped { watch() }
        case .watching:
            // The API ended the stream (timeoutSeconds): resume from the last version. A stream that ends at
            // once with nothing in it is a failure, or the two of us would spin.
            if loop.nowMs - watchStartMs >= 1000 || watchEvents > 0 {
                watch()
            } else {
                failed("watch ended at once")
            }
        case .idle:
            break
        }
    }

    /// One event line of the watch stream.
    private func handle(_ line: String) {
        let event: KubeWatchEvent
        do { event = try KubeWatchEvent.parse(line) } catch {
            // An event we cannot read may be a change we would miss: after the back-off, list again.
            current?.cancel()
            current = nil
            return failed("unreadable watch event: \(error)", relist: true)
        }
        switch event.kind {
        case .error:
            let status = KubeStatus.parse(event.object)
            // Any ERROR ends the watch; the version may be unusable, so list again (client-go does, 410 or not).
            current?.cancel()
            current = nil
            let text = status.map { "\($0.code) \($0.reason): \($0.message)" } ?? event.object.text
            let gone = status?.isGone == true
            failed(
                gone ? "resourceVersion \(resourceVersion) is gone (\(text))" : "watch error: \(text)", relist: true,
                routine: gone)
        case .bookmark:
            watchEvents += 1
            if let version = event.object["metadata"]?["resourceVersion"]?.stringValue, !version.isEmpty {
                resourceVersion = version
            }
        case .added, .modified, .deleted:
            watchEvents += 1
            if let version = event.object["metadata"]?["resourceVersion"]?.stringValue, !version.isEmpty {
                resourceVersion = version
            }
            onEvent(event.kind, event.object)
        }
    }

    /// Backs off, then repeats what failed: the LIST, or the WATCH from the last version (`relist`: a LIST).
    /// `routine`: an expected event (a 410 after compaction), logged at info, not as a warning.
    private func failed(_ error: String, relist: Bool = false, routine: Bool = false) {
        guard !isStopped, !loop.draining else { return }
        if loop.nowMs - lastFailureMs >= settings.backoffResetMs {  // quiet long enough: start over
            failuresInARow = 0
            backoffMs = settings.backoffInitialMs
        }
        lastFailureMs = loop.nowMs
        failuresInARow += 1
        let failedWhat = phase == .watching ? "watch" : "list"
        let retryPhase = phase == .watching && !relist && !resourceVersion.isEmpty ? Phase.watching : .listing
        let line =
            "kube: \(what): \(failedWhat) failed: \(error); \(retryPhase == .listing ? "listing" : "watching") again in "
            + "\(backoffMs) ms (failure \(failuresInARow) in a row), serving the last known state"
        if routine { Log.info(line) } else { Log.warn(line) }
        let timer = LoopTimer { [unowned self] _ in
            guard !self.isStopped else { return }
            if retryPhase == .watching { self.watch() } else { self.list() }
        }
        retryTimer = timer
        loop.schedule(timer, at: loop.nowMs + backoffMs)
        backoffMs = min(backoffMs * 2, settings.backoffMaxMs)
        phase = retryPhase
    }

    /// Percent-encodes a query value (RFC 3986 unreserved characters stay).
    static func encode(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(byte)))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }
}
