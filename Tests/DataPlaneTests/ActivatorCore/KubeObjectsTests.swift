// The Kubernetes side of the activator without sockets: the watch stream's line splitter at every split point,
// the decoding of objects shaped as the API serves them, upstream's activator index rule, URL forms.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore

@Suite struct KubeObjectsTests {
    static let revisionJSON = """
        {"apiVersion":"serving.knative.dev/v1","kind":"Revision","metadata":{"name":"hello-00001","namespace":"default",\
        "uid":"0b6f2f5e-1","resourceVersion":"4711","generation":1,"creationTimestamp":"2026-12-05T08:00:00Z",\
        "labels":{"serving.knative.dev/configuration":"hello","serving.knative.dev/service":"hello"},\
        "annotations":{"serving.knative.dev/creator":"admin"}},\
        "spec":{"containerConcurrency":10,"timeoutSeconds":120,"responseStartTimeoutSeconds":30,"idleTimeoutSeconds":15,\
        "enableServiceLinks":false,"containers":[{"name":"user-container","image":"ghcr.io/x/grpc@sha256:00",\
        "ports":[{"containerPort":8080,"name":"h2c","protocol":"TCP"}],"readinessProbe":{"successThreshold":1,\
        "tcpSocket":{"port":0}},"resources":{}}]},\
        "status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True"}]}}
        """

    static let privateEndpointsJSON = """
        {"kind":"Endpoints","apiVersion":"v1","metadata":{"name":"hello-00001-private","namespace":"default",\
        "resourceVersion":"4800","labels":{"serving.knative.dev/revision":"hello-00001",\
        "networking.internal.knative.dev/serviceType":"Private"}},\
        "subsets":[{"addresses":[{"ip":"10.1.0.9","targetRef":{"kind":"Pod","name":"p9"}},{"ip":"10.1.0.10"}],\
        "notReadyAddresses":[{"ip":"10.1.0.11"}],\
        "ports":[{"name":"http-usermetric","port":9091,"protocol":"TCP"},{"name":"http","port":8012,"protocol":"TCP"},\
        {"name":"https","port":8112,"protocol":"TCP"},{"name":"http-istio","port":8012,"protocol":"TCP"}]},\
        {"addresses":[{"ip":"10.1.0.12"}],"ports":[{"name":"http2","port":8013,"protocol":"TCP"}]},\
        {"addresses":[{"ip":"10.1.0.13"}],"ports":[{"name":"http-autometric","port":9090,"protocol":"TCP"}]}]}
        """

    // MARK: - The watch stream's lines

    @Test func watchLinesAreJoinedAcrossEverySplitPoint() throws {
        let stream = Array(
            (#"{"type":"ADDED","object":{"kind":"Revision","metadata":{"name":"a"}}}"# + "\n"
                + #"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"# + "\r\n\n"
                + #"{"type":"DELETED","object":{"metadata":{"name":"ü"}}}"# + "\n").utf8)
        var expected: [String] = []
        var whole = WatchLineSplitter()
        expected = try whole.feed(stream)
        #expect(expected.count == 3)
        #expect(expected[2].contains("ü"))
        for cut in 0...stream.count {
            var splitter = WatchLineSplitter()
            let lines = try splitter.feed(Array(stream[..<cut])) + splitter.feed(Array(stream[cut...]))
            #expect(lines == expected, "split at \(cut)")
            #expect(splitter.pendingCount == 0)
        }
        var bytewise = WatchLineSplitter()
        var lines: [String] = []
        for byte in stream { lines += try bytewise.feed([byte]) }
        #expect(lines == expected)
    }

    @Test func anEndlessLineIsAnError() throws {
        var splitter = WatchLineSplitter(maxLine: 16)
        #expect(try splitter.feed(Array("0123456789\n".utf8)) == ["0123456789"])
        #expect(throws: JSONFieldError.self) { _ = try splitter.feed(Array("0123456789abcdefg".utf8)) }
    }

    // MARK: - Events and objects

    @Test func watchEventsAndStatusesDecode() throws {
        let added = try KubeWatchEvent.parse(#"{"type":"ADDED","object":\#(Self.revisionJSON)}"#)
        #expect(added.kind == .added)
        #expect(added.object["metadata"]?["resourceVersion"]?.stringValue == "4711")

        let gone = try KubeWatchEvent.parse(
            #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 5 (4700)","reason":"Expired","code":410}}"#
        )
        #expect(gone.kind == .error)
        let status = try #require(KubeStatus.parse(gone.object))
        #expect(status.isGone && status.reason == "Expired" && status.message.hasPrefix("too old"))
        #expect(KubeStatus.parse(added.object) == nil)

        let bookmark = try KubeWatchEvent.parse(
            #"{"type":"BOOKMARK","object":{"kind":"Revision","apiVersion":"serving.knative.dev/v1","metadata":{"resourceVersion":"5000","creationTimestamp":null,"annotations":{"k8s.io/initial-events-end":"true"}}}}"#
        )
        #expect(bookmark.kind == .bookmark)

        #expect(throws: JSONFieldError.self) { _ = try KubeWatchEvent.parse(#"{"type":"CHANGED","object":{}}"#) }
        #expect(throws: JSONFieldError.self) { _ = try KubeWatchEvent.parse(#"{"type":"ADDED"}"#) }
        #expect(throws: JSONFieldError.self) { _ = try KubeWatchEvent.parse("not json") }
    }

    @Test func aRevisionGivesItsConcurrencyTimeoutsAndProtocol() throws {
        let spec = try KubeRevision.spec(try JSON.parse(Self.revisionJSON))
        #expect(spec.key == "default/hello-00001")
        #expect(spec.containerConcurrency == 10 && spec.timeoutSeconds == 120)
        #expect(spec.responseStartTimeoutSeconds == 30 && spec.idleTimeoutSeconds == 15)
        #expect(spec.protocolName == "h2c")

        // No ports named h2c, no timeouts: HTTP/1 and the defaulting webhook's 300 s.
        let bare = try KubeRevision.spec(
            try JSON.parse(
                #"{"metadata":{"name":"r","namespace":"ns"},"spec":{"containers":[{"name":"sidecar"},{"name":"app","ports":[{"containerPort":8080,"name":"http1"}]}]}}"#
            ))
        #expect(bare.protocolName == "http1" && bare.timeoutSeconds == 300 && bare.containerConcurrency == 0)

        #expect(throws: JSONFieldError.self) {
            _ = try KubeRevision.spec(
                try JSON.parse(#"{"metadata":{"name":"r","namespace":"ns"},"spec":{"containerConcurrency":"1"}}"#))
        }
        do {
            _ = try KubeRevision.spec(
                try JSON.parse(#"{"metadata":{"name":"r","namespace":"ns"},"spec":{"timeoutSeconds":-1}}"#))
            Issue.record("a negative timeout was accepted")
        } catch {
            #expect("\(error)".hasPrefix("revision.spec.timeoutSeconds: expected an integer"))
        }
    }

    @Test func endpointsGiveTheReadyAddressesOnTheServingPort() throws {
        let endpoints = try KubeEndpoints.parse(try JSON.parse(Self.privateEndpointsJSON))
        #expect(endpoints.revisionKey == "default/hello-00001")
        #expect(endpoints.meta.resourceVersion == "4800")
        // Not-ready 10.1.0.11 is apart (probed, not counted among the ready IPs); 10.1.0.13 is left out (no port
        // named http or http2).
        #expect(endpoints.ready.map(\.description) == ["10.1.0.10:8012", "10.1.0.12:8013", "10.1.0.9:8012"])
        #expect(endpoints.notReady.map(\.description) == ["10.1.0.11:8012"])
        #expect(endpoints.readyIPs == ["10.1.0.10", "10.1.0.12", "10.1.0.9"])

        let empty = try KubeEndpoints.parse(
            try JSON.parse(#"{"kind":"Endpoints","metadata":{"name":"x","namespace":"d","labels":{}}}"#))
        #expect(empty.ready.isEmpty && empty.notReady.isEmpty && empty.revisionKey == nil)
        #expect(throws: JSONFieldError.self) {
            _ = try KubeEndpoints.parse(
                try JSON.parse(#"{"subsets":[{"addresses":[{"ip":"nope"}],"ports":[{"name":"http","port":8012}]}]}"#))
        }
    }

    @Test func listsAndConfigMapsDecode() throws {
        let list = try KubeList.parse(
            try JSON.parse(
                #"{"kind":"EndpointsList","apiVersion":"v1","metadata":{"resourceVersion":"123"},"items":[{"metadata":{"name":"a"}}]}"#
            ))
        #expect(list.resourceVersion == "123" && list.items.count == 1)
        let data = try KubeConfigMap.data(
            try JSON.parse(#"{"kind":"ConfigMap","data":{"loglevel.activator":"debug","zap-logger-config":"{}"}}"#))
        #expect(data["loglevel.activator"] == "debug")
    }

    // MARK: - Subsetting: upstream's inferIndex

    @Test func theActivatorIndexIsItsPlaceAmongTheSortedIPs() {
        #expect(ActivatorSubset.infer(ips: ["10.0.0.3", "10.0.0.1", "10.0.0.2"], selfIP: "10.0.0.2")! == (3, 1))
        // Sorted as strings, as upstream: "10.0.0.10" comes before "10.0.0.9".
        #expect(ActivatorSubset.infer(ips: ["10.0.0.9", "10.0.0.10"], selfIP: "10.0.0.9")! == (2, 1))
        #expect(ActivatorSubset.infer(ips: ["10.0.0.1"], selfIP: "10.0.0.2") == nil)
        #expect(ActivatorSubset.infer(ips: [], selfIP: "10.0.0.2") == nil)
    }

    // MARK: - URLs

    @Test func apiAndAutoscalerURLsTakeHostNames() {
        let api = KubeAPIEndpoint(url: "http://localhost:8001")
        #expect(api?.host == "localhost" && api?.port == 8001 && api?.pathPrefix == "")
        #expect(KubeAPIEndpoint(url: "http://10.0.0.1")?.port == 80)
        #expect(KubeAPIEndpoint(url: "http://[::1]:8001/prefix/")?.pathPrefix == "/prefix")
        #expect(KubeAPIEndpoint(url: "https://10.0.0.1:6443") == nil)
        #expect(KubeAPIEndpoint(url: "http://bad_host:1") == nil)
        #expect(KubeAPIEndpoint(url: "http://h:99999") == nil)

        let ws = WebSocketClient(url: "ws://autoscaler.knative-serving.svc.cluster.local:8080")
        #expect(ws?.host == "autoscaler.knative-serving.svc.cluster.local" && ws?.port == 8080 && ws?.path == "/")
        #expect(WebSocketClient(url: "ws://127.0.0.1:9/x")?.host == "127.0.0.1")
        #expect(WebSocketClient(url: "ws://under_score:80/") == nil)
        #expect(
            KubeReflector.encode("networking.internal.knative.dev/serviceType=Private")
                == "networking.internal.knative.dev%2FserviceType%3DPrivate")
    }

    @Test func theClusterDomainComesFromResolvConfsSearchList() {
        let pod =
            "nameserver 10.96.0.10\nsearch knative-serving.svc.corp.example. svc.corp.example. corp.example\noptions ndots:5\n"
        #expect(KubeCluster.domain(resolvConf: pod) == "corp.example")
        #expect(KubeCluster.domain(resolvConf: "search\tsvc.cluster.local cluster.local\n") == "cluster.local")
        #expect(KubeCluster.domain(resolvConf: "nameserver 10.255.255.53\n") == nil)
        #expect(KubeCluster.domain(resolvConf: "search example.com\n") == nil)
    }

    @Test func localhostIsLookedUpIPv4First() throws {
        let addresses = try HostResolver.lookup("localhost", port: 8001).get()
        #expect(addresses.first?.description == "127.0.0.1:8001")
    }
}
