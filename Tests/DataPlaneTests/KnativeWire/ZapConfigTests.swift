// config-logging's zap JSON → the engine's LogFormat: upstream's default, console encoding, zap's omissions,
// and errors that name the field.
import Testing

@testable import KnativeWire
@testable import ProxyCore

struct ZapConfigTests {
    @Test func upstreamDefaultGivesKnativesJSONLines() throws {
        let zap = try #require(try ZapConfig.parse(ZapConfig.knativeDefault))
        #expect(zap.level == .info)
        #expect(zap.warnings.isEmpty)
        var expected = LogFormat()
        expected.encoding = .json
        (expected.messageKey, expected.levelKey, expected.timeKey) = ("message", "severity", "timestamp")
        (expected.nameKey, expected.callerKey) = ("logger", "caller")
        expected.time = .iso8601
        expected.level = .lowercase
        expected.outputs = [1]
        #expect(zap.format == expected)
        let line = zap.format.line(
            .info, logger: "queueproxy", caller: "QueueProxy/main.swift:98", message: "hi \"there\"",
            fields: [("knative.dev/pod", "p")], seconds: 1_796_455_222, nanoseconds: 123_456_789)
        #expect(
            line == """
                {"severity":"info","timestamp":"2026-12-05T07:20:22.123Z","logger":"queueproxy",\
                "caller":"QueueProxy/main.swift:98","message":"hi \\"there\\"","knative.dev/pod":"p"}

                """)
    }

    @Test func consoleEncodingWithCapitalLevelsAndRFC3339Nano() throws {
        let zap = try #require(
            try ZapConfig.parse(
                """
                {"level": "debug", "encoding": "console", "outputPaths": ["stderr"],
                 "encoderConfig": {"timeKey": "t", "levelKey": "l", "messageKey": "m", "nameKey": "",
                 "levelEncoder": "capital", "timeEncoder": "rfc3339nano"}}
                """))
        #expect(zap.level == .debug)
        #expect(zap.format.outputs == [2])
        let line = zap.format.line(
            .warn, logger: "activator", caller: "", message: "slow", fields: [("k", "v")], seconds: 0,
            nanoseconds: 500_000_000)
        #expect(line == "1970-01-01T00:00:00.5Z\tWARN\tslow\t{\"k\":\"v\"}\n")
    }

    @Test func absentKeysAreLeftOutAndTimeDefaultsToEpoch() throws {
        let zap = try #require(try ZapConfig.parse(#"{"encoderConfig": {"messageKey": "msg", "timeKey": "ts"}}"#))
        let line = zap.format.line(
            .error, logger: "x", caller: "", message: "m", fields: [], seconds: 2, nanoseconds: 500_000_000)
        #expect(line == "{\"ts\":2.5,\"msg\":\"m\"}\n")
        #expect(zap.format.outputs == [2])
    }

    @Test(arguments: [
        ("iso8601", "\"1970-01-01T00:00:01.002Z\""), ("rfc3339", "\"1970-01-01T00:00:01Z\""),
        ("rfc3339nano", "\"1970-01-01T00:00:01.002003Z\""), ("epoch", "1.002003"), ("millis", "1002.003"),
        ("nanos", "1002003000"), ("", "1.002003"),
    ])
    func timeEncoders(_ name: String, _ expected: String) throws {
        let zap = try #require(try ZapConfig.parse(#"{"encoderConfig": {"timeEncoder": "\#(name)"}}"#))
        #expect(zap.format.timeText(1, 2_003_000, quoted: true) == expected)
    }

    @Test func emptyConfigKeepsTheStandardFormat() throws {
        #expect(try ZapConfig.parse("") == nil)
        #expect(try ZapConfig.parse("  \n") == nil)
        let line = LogFormat.standard.line(
            .info, logger: "queueproxy", caller: "", message: "m", fields: [("a", "b")], seconds: 1,
            nanoseconds: 500_000_000)
        #expect(line == #"{"severity":"INFO","level":"info","ts":1.5,"logger":"queueproxy","msg":"m","a":"b"}"# + "\n")
    }

    @Test func unsupportedOutputPathsAreWarnedAndUseStderr() throws {
        let zap = try #require(
            try ZapConfig.parse(#"{"outputPaths": ["/var/log/qp.log", "stdout"], "errorOutputPaths": ["x"]}"#))
        #expect(zap.format.outputs == [2, 1])
        #expect(zap.warnings.count == 2)
        #expect(zap.warnings[0].contains("outputPaths: \"/var/log/qp.log\" is not supported"))
        #expect(zap.warnings[1].contains("errorOutputPaths"))
    }

    @Test(arguments: [
        ("{", "invalid JSON"),
        ("[]", "expected an object"),
        (#"{"level": "loud"}"#, #"level: expected debug, info, warn or error, got a string ("loud")"#),
        (#"{"encoding": "xml"}"#, #"encoding: expected json or console, got a string ("xml")"#),
        (#"{"outputPaths": "stdout"}"#, "outputPaths: expected an array of paths"),
        (#"{"outputPaths": [1]}"#, "outputPaths[0]: expected a path string, got 1"),
        (#"{"encoderConfig": {"messageKey": 3}}"#, "encoderConfig.messageKey: expected a string, got 3"),
        (#"{"encoderConfig": {"timeEncoder": 3}}"#, "encoderConfig.timeEncoder: expected a string, got 3"),
        (#"{"encoderConfig": []}"#, "encoderConfig: expected an object"),
    ])
    func badConfigNamesTheField(_ text: String, _ message: String) {
        #expect {
            _ = try ZapConfig.parse(text)
        } throws: { error in
            "\(error)".contains(message)
        }
    }
}
