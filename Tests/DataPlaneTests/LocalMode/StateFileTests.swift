// kn-local's state file (StateFile): encoding round trip, errors that name the field, and the file operations.
import Foundation
import Glibc
import KnativeWire
import ProxyCore
import Testing

@testable import LocalMode

@Suite struct StateFileTests {
    static let document = try! JSON.parse(
        #"""
        {"apiVersion":"serving.knative.dev/v1","kind":"Service","metadata":{"name":"hello"},
         "spec":{"template":{"metadata":{"annotations":{"autoscaling.knative.dev/min-scale":"1"}},
          "spec":{"containers":[{"image":"x","command":["sleep","1"],"env":[{"name":"A","value":"b"}]}]}},
          "traffic":[{"revisionName":"hello-00001","percent":40,"tag":"old"},{"latestRevision":true,"percent":60}]}}
        """#)

    static func sample() throws -> [StoredService] {
        let manifest = try Manifest.decode(document)
        let template = document["spec"]!["template"]!
        func revision(_ name: String, _ generation: Int, ready: Condition) -> StoredRevision {
            StoredRevision(
                name: name, generation: generation, createdAtUnixMs: 1_700_000_000_000 + Int64(generation),
                templateDocument: template, template: manifest.template, condition: ready, everReady: true,
                desiredScale: generation - 1)
        }
        return [
            StoredService(
                namespace: "default", name: "hello", document: document, manifest: manifest, generation: 2,
                createdAtUnixMs: 1_700_000_000_000, latestCreated: "hello-00002", latestReady: "hello-00002",
                configCondition: .ready, routeCondition: .ready,
                traffic: [
                    TrafficTarget(revisionName: "hello-00001", percent: 40, tag: "old"),
                    TrafficTarget(revisionName: "hello-00002", percent: 60),
                ],
                revisions: [
                    revision("hello-00001", 1, ready: .ready),
                    revision(
                        "hello-00002", 2,
                        ready: Condition(
                            status: "False", reason: "ProgressDeadlineExceeded", message: "a \"quoted\"\nmessage")),
                ])
        ]
    }

    @Test func encodingRoundTrips() throws {
        let services = try Self.sample()
        let text = StateFile.encode(services)
        #expect(text.hasPrefix(#"{"apiVersion":"kn-local/v1","kind":"State","services":[{"namespace":"default""#))
        #expect(text.hasSuffix("}\n"))
        #expect(try StateFile.decode(text) == services)
        #expect(StateFile.encode([]) == #"{"apiVersion":"kn-local/v1","kind":"State","services":[]}"# + "\n")
        #expect(try StateFile.decode(StateFile.encode([])).isEmpty)
    }

    @Test func nonFiniteNumbersAreWrittenAsNull() {
        let value = JSON.object([("a", .array([.number(.infinity), .number(1)])), ("b", .number(-.infinity))])
        #expect(StateFile.finite(value).text == #"{"a":[null,1],"b":null}"#)
    }

    /// Every way a file can be unusable gives an error that says where.
    @Test(arguments: [
        ("", "not JSON: unexpected end of input at offset 0"),
        (#"{"apiVersion":"kn-local/v2","kind":"State","services":[]}"#, "apiVersion kn-local/v2: expected kn-local/v1"),
        (#"{"apiVersion":"kn-local/v1","kind":"State"}"#, "services: missing"),
        (
            #"{"apiVersion":"kn-local/v1","kind":"State","services":[{"namespace":"default","name":"hello"}]}"#,
            "services[0].manifest: missing"
        ),
    ])
    func unusableFilesNameTheProblem(text: String, error: String) {
        #expect {
            _ = try StateFile.decode(text)
        } throws: { thrown in
            "\(thrown)".hasPrefix(error)
        }
    }

    @Test func fieldsAndReferencesAreChecked() throws {
        let good = StateFile.encode(try Self.sample())
        /// The error for `good` with the first `from` changed to `to`.
        func failure(_ from: String, _ to: String) -> String {
            guard let range = good.range(of: from) else { return "\(from) not in the sample" }
            do {
                _ = try StateFile.decode(good.replacingCharacters(in: range, with: to))
                return "decoded"
            } catch { return error.description }
        }
        #expect(
            failure(#""generation":2,"createdAt""#, #""generation":"2","createdAt""#)
                == #"services[0].generation: expected a generation ≥ 1, got a string ("2")"#)
        #expect(
            failure(#""latestReadyRevisionName":"hello-00002""#, #""latestReadyRevisionName":"hello-00009""#)
                == "services[0].latestReadyRevisionName: hello-00009 is not one of its revisions")
        #expect(
            failure(
                #""message":""},"traffic":[{"revisionName":"hello-00001""#,
                #""message":""},"traffic":[{"revisionName":"gone""#)
                == "services[0].traffic[0]: revision gone is not stored")
        #expect(
            failure(#""status":"False""#, #""status":"Maybe""#)
                == #"services[0].revisions[1].ready.status: expected True, False or Unknown, got a string ("Maybe")"#)
        #expect(failure(#""name":"hello-00002""#, #""name":"hello-00001""#).contains("appears twice"))
        // A manifest that no longer validates is named with Knative's message.
        #expect(
            failure(#""command":["sleep","1"]"#, #""command":"sleep""#).hasPrefix(
                "services[0].manifest: "))
    }

    @Test func writeReplacesAtomicallyAndMoveAsideKeepsTheFile() throws {
        let directory = NSTemporaryDirectory() + "state-file-test-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/state.json"
        guard case .none = StateFile.load(path) else {
            Issue.record("a missing file is a first start")
            return
        }
        try StateFile.write("first\n", to: path)
        try StateFile.write("second\n", to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "second\n")
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        guard case .unusable(let why) = StateFile.load(path) else {
            Issue.record("\"second\" is not a state file")
            return
        }
        #expect(why.hasPrefix("not JSON"))
        // 2023-11-14T22:13:20Z; a second file in the same second gets a suffix.
        let aside = try StateFile.moveAside(path, unixMs: 1_700_000_000_000)
        #expect(aside == path + ".corrupt-20231114T221320Z")
        try StateFile.write("third\n", to: path)
        #expect(try StateFile.moveAside(path, unixMs: 1_700_000_000_000) == path + ".corrupt-20231114T221320Z-1")
        #expect(try String(contentsOfFile: aside, encoding: .utf8) == "second\n")
        #expect(throws: StateFileError.self) { try StateFile.write("x", to: directory + "/missing/state.json") }
        // A directory where the file should be cannot be read: unusable, not "none".
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard case .unusable(let directoryWhy) = StateFile.load(path) else {
            Issue.record("a directory is not a state file")
            return
        }
        #expect(directoryWhy.hasPrefix("cannot read it: "))
    }
}
