import Foundation

/// The package's root directory: the nearest directory above this file that holds `Package.swift` (test files
/// move between folders; a fixed count of `..` would break silently).
enum PackageRoot {
    static let url: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
            url = url.deletingLastPathComponent()
        }
        fatalError("no Package.swift above \(#filePath)")
    }()
}

/// Whether RSS bounds apply: a sanitized run (`.ci/run` sets ASAN_OPTIONS for its address-sanitized pass) holds
/// shadow memory and a quarantine of freed blocks, so memory figures say nothing about the code there.
let memoryBoundsApply =
    ProcessInfo.processInfo.environment["ASAN_OPTIONS"] == nil
    && ProcessInfo.processInfo.environment["TSAN_OPTIONS"] == nil
