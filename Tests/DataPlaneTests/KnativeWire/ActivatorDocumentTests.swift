// The activator's state decoder (admin API bodies and --config files): every field of the wrong JSON type is an
// error naming its path and the expected type; names follow Kubernetes' rules; hosts belong to one route.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

@Suite struct ActivatorDocumentTests {
    private static let good =
        #"{"hosts": ["svc.default.example.com"], "traffic": [{"revisionName": "svc-00001", "percent": 100}]}"#

    private func route(_ body: String, name: String = "svc") -> Result<RouteSpec, JSONFieldError> {
        do {
            return .success(
                try ActivatorDocument.parseRoute(try JSON.parse(body), at: "route", namespace: "default", name: name))
        } catch let error as JSONFieldError {
            return .failure(error)
        } catch {
            return .failure(JSONFieldError("\(error)"))
        }
    }

    private func revision(_ body: String, namespace: String = "default", name: String = "r") -> Result<
        RevisionSpec, JSONFieldError
    > {
        do {
            return .success(
                try ActivatorDocument.parseRevision(
                    try JSON.parse(body), at: "revision", namespace: namespace, name: name))
        } catch let error as JSONFieldError {
            return .failure(error)
        } catch {
            return .failure(JSONFieldError("\(error)"))
        }
    }

    private func failure<T>(_ result: Result<T, JSONFieldError>) -> String {
        if case .failure(let error) = result { return error.description }
        return "(accepted)"
    }

    @Test(arguments: [
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a", "percent": "fifty"}]}"#,
            #"route.traffic[0].percent: expected an integer 0-100, got a string ("fifty")"#
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 50.5}]}"#,
            "route.traffic[0].percent: expected an integer 0-100, got a number (50.5)"
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 150}]}"#,
            "route.traffic[0].percent: expected an integer 0-100, got 150"
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 100, "tag": 7}]}"#,
            "route.traffic[0].tag: expected a string, got 7"
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": ["a"], "percent": 100}]}"#,
            "route.traffic[0].revisionName: expected a string, got an array"
        ),
        (#"{"hosts": ["h"], "traffic": ["a"]}"#, #"route.traffic[0]: expected an object, got a string ("a")"#),
        (
            #"{"hosts": ["h"], "traffic": {"revisionName": "a"}}"#,
            "route.traffic: expected a non-empty list of traffic targets, got an object"
        ),
        (
            #"{"hosts": "h", "traffic": [{"revisionName": "a", "percent": 100}]}"#,
            #"route.hosts: expected a list of host names, got a string ("h")"#
        ),
        (
            #"{"hosts": [true], "traffic": [{"revisionName": "a", "percent": 100}]}"#,
            "route.hosts[0]: expected a host name, got a boolean (true)"
        ),
        (
            #"{"hosts": ["h/x"], "traffic": [{"revisionName": "a", "percent": 100}]}"#,
            #"route.hosts[0]: invalid name "h/x": a lowercase RFC 1123 subdomain must consist of"#
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a%2Fb", "percent": 100}]}"#,
            #"route.traffic[0].revisionName: invalid name "a%2Fb": a DNS-1035 label must consist of"#
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 100, "tag": "Old"}]}"#,
            #"route.traffic[0].tag: invalid name "Old": a DNS-1035 label"#
        ),
        (
            #"{"name": 3, "hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 100}]}"#,
            "route.name: expected a string, got 3"
        ),
        (
            #"{"name": "other", "hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 100}]}"#,
            #"route.name: "other" does not match the URL's "svc""#
        ),
        (
            #"{"hosts": ["h"], "traffic": [{"revisionName": "a", "percent": 60}]}"#,
            "route.traffic: traffic targets sum to 60, want 100"
        ),
        (#"[]"#, "route: expected an object, got an array"),
        (#"{"hosts": ["h"], "notReady": 1}"#, "route.notReady: expected a string, got 1"),
        (#"{"hosts": ["h"], "notReady": ""}"#, "route.notReady: expected a non-empty message"),
    ])
    func routeFieldsOfTheWrongTypeOrFormAreNamed(_ body: String, _ message: String) {
        let text = failure(route(body))
        #expect(text.hasPrefix(message), "\(text)")
    }

    @Test(arguments: [
        (
            #"{"containerConcurrency": "1"}"#,
            #"revision.containerConcurrency: expected an integer from 0 to 2147483647, got a string ("1")"#
        ),
        (#"{"timeoutSeconds": -1}"#, "revision.timeoutSeconds: expected an integer from 0 to 2147483647, got -1"),
        (
            #"{"idleTimeoutSeconds": {}}"#,
            "revision.idleTimeoutSeconds: expected an integer from 0 to 2147483647, got an object"
        ),
        (#"{"protocol": 2}"#, #"revision.protocol: expected "http1" or "h2c", got 2"#),
        (#"{"protocol": "h3"}"#, #"revision.protocol: expected "http1" or "h2c", got a string ("h3")"#),
        (#"{"namespace": false}"#, "revision.namespace: expected a string, got a boolean (false)"),
        ("true", "revision: expected an object, got a boolean (true)"),
    ])
    func revisionFieldsOfTheWrongTypeAreNamed(_ body: String, _ message: String) {
        let text = failure(revision(body))
        #expect(text.hasPrefix(message), "\(text)")
    }

    @Test(arguments: ["a%2Fb", "A", "1abc", "abc-", "a.b", String(repeating: "a", count: 64), ""])
    func revisionAndRouteNamesAreDNS1035Labels(_ name: String) {
        let rev = failure(revision("{}", name: name))
        #expect(rev.hasPrefix("revision.name (from the URL): invalid name \(JSON.quote(name)): "), "\(rev)")
        #expect(rev.contains("DNS-1035 label") || rev.contains("no more than 63 characters"), "\(rev)")
        let rte = failure(route(Self.good, name: name))
        #expect(rte.hasPrefix("route.name (from the URL): invalid name \(JSON.quote(name)): "), "\(rte)")
    }

    @Test func goodNamesNullAndDefaults() throws {
        #expect(try revision("{}", name: "hello-00001").get().containerConcurrency == 0)
        #expect(try revision(#"{"containerConcurrency": null, "protocol": null}"#).get().protocolName == "http1")
        #expect(
            failure(revision("{}", namespace: "Default")).hasPrefix("revision.namespace (from the URL): invalid name"))
        #expect(try revision("{}", namespace: "1st").get().namespace == "1st")  // namespaces are DNS-1123 labels
        let parsed = try route(
            #"{"hosts": ["SVC.Default.example.com", "svc.default.example.com"], "traffic": [{"revisionName": "a", "tag": null, "percent": 100}]}"#
        ).get()
        #expect(parsed.hosts == ["svc.default.example.com"])
        #expect(parsed.traffic == [TrafficTarget(revisionName: "a", percent: 100)])
    }

    @Test func documentsNameTheirFieldsAndRefuseSharedHosts() {
        func problem(_ text: String) -> String {
            do {
                _ = try ActivatorDocument.parse(text)
                return "(accepted)"
            } catch { return error.description }
        }
        #expect(problem(#"{"revisions": {"namespace": "default"}}"#) == "revisions: expected an array, got an object")
        #expect(problem(#"{"routes": "x"}"#) == #"routes: expected an array, got a string ("x")"#)
        #expect(problem(#"{"endpoints": []}"#) == "endpoints: expected an object, got an array")
        #expect(
            problem(#"{"endpoints": {"default/r": {"addresses": "127.0.0.1:1"}}}"#)
                == #"endpoints["default/r"].addresses: expected a list of "ip:port", got a string ("127.0.0.1:1")"#)
        #expect(
            problem(#"{"revisions": [{"namespace": "default", "name": "r", "timeoutSeconds": "30"}]}"#)
                == #"revisions[0].timeoutSeconds: expected an integer from 0 to 2147483647, got a string ("30")"#)
        let shared = #"""
            {"routes": [
              {"namespace": "default", "name": "a", "hosts": ["x.example.com"], "traffic": [{"revisionName": "r", "percent": 100}]},
              {"namespace": "other", "name": "b", "hosts": ["x.example.com"], "traffic": [{"revisionName": "r", "percent": 100}]}]}
            """#
        #expect(problem(shared) == #"routes[1].hosts: host "x.example.com" is already claimed by route "default/a""#)
    }

    @Test func tagHostsCountAsClaimed() throws {
        let tagged = try route(
            #"{"hosts": ["svc.example.com"], "traffic": [{"revisionName": "a", "percent": 100, "tag": "old"}]}"#
        ).get()
        let plain = try route(
            #"{"hosts": ["old-svc.example.com"], "traffic": [{"revisionName": "b", "percent": 100}]}"#, name: "other"
        ).get()
        #expect(
            plain.conflict(with: [tagged]) == #"host "old-svc.example.com" is already claimed by route "default/svc""#)
        #expect(tagged.conflict(with: [tagged]) == nil)  // a route may replace itself
    }
}
