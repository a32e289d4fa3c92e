// A YAML reader for the subset Kubernetes manifests use, producing the same `JSON` values as the JSON reader:
// block maps and lists (including the compact `- key: value` form and lists at their key's indent), plain,
// 'single' and "double" quoted scalars, `|`/`>` block scalars, one-line flow lists and maps, comments and
// `---` documents. Everything else (anchors, aliases, tags, complex keys, tabs, multi-line plain scalars)
// is refused with the line number, never guessed at.
import KnativeWire
import ProxyCore

public struct YAMLError: Error, CustomStringConvertible, Sendable {
    public let line: Int
    public let message: String
    public var description: String { "line \(line): \(message)" }
}

public enum YAML {
    /// Parses every document of a stream; empty documents are skipped.
    public static func parseDocuments(_ text: String) throws(YAMLError) -> [JSON] {
        var documents: [JSON] = []
        var current: [Line] = []
        var number = 0
        func flush() throws(YAMLError) {
            if current.contains(where: { !$0.isBlank }) {
                var parser = Parser(lines: current)
                documents.append(try parser.document())
            }
            current.removeAll()
        }
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var text = Substring(raw)
            if text.last == "\r" { text = text.dropLast() }
            if text.hasPrefix("---") && (text.count == 3 || text.dropFirst(3).first == " ") {
                try flush()
                let rest = text.dropFirst(3).drop { $0 == " " }
                if !rest.isEmpty && !rest.hasPrefix("#") {
                    throw YAMLError(
                        line: number, message: "content after \"---\" is not supported; start it on the next line")
                }
                continue
            }
            if text == "..." {
                try flush()
                continue
            }
            if text.hasPrefix("%") { throw YAMLError(line: number, message: "YAML directives are not supported") }
            current.append(try Line(number: number, raw: text))
        }
        try flush()
        return documents
    }

    /// The typed value of a plain (unquoted) scalar: null, booleans and numbers as YAML 1.2's core schema.
    static func plainValue(_ text: Substring) -> JSON {
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        default: break
        }
        if looksNumeric(text), let number = Double(text) { return .number(number) }
        return .string(String(text))
    }

    private static func looksNumeric(_ text: Substring) -> Bool {
        var body = text
        if body.first == "-" || body.first == "+" { body = body.dropFirst() }
        guard let first = body.first, first.isASCII, first.isNumber || first == "." else { return false }
        return body.allSatisfy {
            $0.isASCII && ($0.isNumber || $0 == "." || $0 == "e" || $0 == "E" || $0 == "-" || $0 == "+")
        }
    }
}

/// One source line: its indent and its text with the comment removed (kept raw for block scalars).
struct Line {
    let number: Int
    var indent: Int
    var text: Substring
    let raw: Substring

    init(number: Int, raw: Substring) throws(YAMLError) {
        self.number = number
        self.raw = raw
        let indent = raw.prefix { $0 == " " }.count
        let rest = raw.dropFirst(indent)
        if rest.first == "\t" { throw YAMLError(line: number, message: "tabs cannot indent YAML; use spaces") }
        self.indent = indent
        self.text = Line.stripComment(rest)
    }

    init(number: Int, indent: Int, text: Substring, raw: Substring) {
        self.number = number
        self.indent = indent
        self.text = text
        self.raw = raw
    }

    var isBlank: Bool { text.isEmpty }

    /// Removes a `#` comment that starts the line or follows a space, outside quotes; trims trailing spaces.
    static func stripComment(_ text: Substring) -> Substring {
        var quote: Character? = nil
        var previous: Character = " "
        var end = text.endIndex
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if let q = quote {
                if c == q {
                    // '' inside single quotes is an escaped quote, not the end.
                    let next = text.index(after: i)
                    if q == "'" && next < text.endIndex && text[next] == "'" {
                        i = text.index(after: next)
                        continue
                    }
                    quote = nil
                } else if c == "\\" && q == "\"" {
                    i = text.index(after: i)
                    if i == text.endIndex { break }
                }
            } else if c == "#" && (previous == " " || previous == "\t") {
                end = i
                break
            } else if (c == "\"" || c == "'")
                && (previous == " " || previous == "[" || previous == "{" || previous == ","
                    || previous == ":" || i == text.startIndex)
            {
                quote = c
            }
            previous = c
            i = text.index(after: i)
        }
        var result = text[text.startIndex..<end]
        while result.last == " " || result.last == "\t" { result = result.dropLast() }
        return result
    }
}

/// Nesting deeper than this is refused (as the JSON reader does): no stack overflow on hostile input.
let maxYAMLDepth = 64

struct Parser {
    var lines: [Line]
    var index = 0
    private var depth = 0

    init(lines: [Line]) { self.lines = lines }

    mutating func document() throws(YAMLError) -> JSON {
        skipBlank()
        guard index < lines.count else { return .null }
        let value = try block(indent: lines[index].indent)
        skipBlank()
        if index < lines.count {
            throw YAMLError(
                line: lines[index].number, message: "unexpected indentation or content after the document's top level")
        }
        return value
    }

    private mutating func skipBlank() {
        while index < lines.count && lines[index].isBlank { index += 1 }
    }

    private func fail(_ message: String) -> YAMLError {
        YAMLError(line: index < lines.count ? lines[index].number : (lines.last?.number ?? 0), message: message)
    }

    /// A node whose first line is the current line, at exactly `indent`.
    private mutating func block(indent: Int) throws(YAMLError) -> JSON {
        depth += 1
        defer { depth -= 1 }
        if depth > maxYAMLDepth { throw fail("nesting deeper than \(maxYAMLDepth) levels") }
        let line = lines[index]
        if isSequenceEntry(line.text) { return try sequence(indent: indent) }
        if try splitKey(line.text, line: line.number) != nil { return try mapping(indent: indent) }
        // A lone scalar or flow node on its own line.
        index += 1
        return try inlineValue(line.text, line: line.number)
    }

    private func isSequenceEntry(_ text: Substring) -> Bool { text == "-" || text.hasPrefix("- ") }

    private mutating func sequence(indent: Int) throws(YAMLError) -> JSON {
        var items: [JSON] = []
        while true {
            skipBlank()
            guard index < lines.count else { break }
            let line = lines[index]
            if line.indent < indent { break }
            if line.indent > indent { throw fail("bad indentation of a list item (expected column \(indent + 1))") }
            guard isSequenceEntry(line.text) else { break }
            let rest = line.text.dropFirst().drop { $0 == " " }
            if rest.isEmpty {
                index += 1
                skipBlank()
                if index < lines.count && lines[index].indent > indent {
                    items.append(try block(indent: lines[index].indent))
                } else {
                    items.append(.null)
                }
                continue
            }
            // `- key: value` or `- - x`: the rest of the line starts a node at its own column.
            let column = line.indent + (line.text.count - rest.count)
            lines[index] = Line(number: line.number, indent: column, text: rest, raw: line.raw)
            var startsNode = isSequenceEntry(rest)
            if !startsNode { startsNode = try splitKey(rest, line: line.number) != nil }
            if startsNode {
                items.append(try block(indent: column))
            } else if let style = blockScalarStyle(rest) {
                index += 1
                items.append(.string(try blockScalar(style: style, parentIndent: indent, line: line.number)))
            } else {
                index += 1
                items.append(try inlineValue(rest, line: line.number))
            }
        }
        return .array(items)
    }

    private mutating func mapping(indent: Int) throws(YAMLError) -> JSON {
        var members: [(String, JSON)] = []
        var seen = Set<String>()
        while true {
            skipBlank()
            guard index < lines.count else { break }
            let line = lines[index]
            if line.indent < indent { break }
            if line.indent > indent { throw fail("bad indentation of a mapping entry (expected column \(indent + 1))") }
            if isSequenceEntry(line.text) { break }
            guard let (key, rest) = try splitKey(line.text, line: line.number) else {
                throw fail("expected \"key: value\"; multi-line plain scalars are not supported (quote the value)")
            }
            guard seen.insert(key).inserted else { throw fail("mapping key \"\(key)\" already defined") }
            index += 1
            let value: JSON
            if rest.isEmpty {
                skipBlank()
                if index < lines.count && lines[index].indent > indent {
                    value = try block(indent: lines[index].indent)
                } else if index < lines.count && lines[index].indent == indent && isSequenceEntry(lines[index].text) {
                    value = try sequence(indent: indent)  // a list may sit at its key's indent
                } else {
                    value = .null
                }
            } else if let style = blockScalarStyle(rest) {
                value = .string(try blockScalar(style: style, parentIndent: indent, line: line.number))
            } else {
                value = try inlineValue(rest, line: line.number)
            }
            members.append((key, value))
        }
        return .object(members)
    }

    /// Splits `key: rest` (key plain or quoted); nil when the text is not a mapping entry.
    private func splitKey(_ text: Substring, line: Int) throws(YAMLError) -> (String, Substring)? {
        if text.hasPrefix("? ") || text == "?" {
            throw YAMLError(line: line, message: "complex mapping keys (\"?\") are not supported")
        }
        if let first = text.first, first == "\"" || first == "'" {
            var scanner = FlowScanner(text: text, line: line)
            guard let key = try? scanner.quoted() else { return nil }
            let after = scanner.rest
            guard after.first == ":" else { return nil }
            let rest = after.dropFirst()
            guard rest.isEmpty || rest.first == " " else { return nil }
            return (key, rest.drop { $0 == " " })
        }
        if text.first == "[" || text.first == "{" { return nil }
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == ":" {
                let next = text.index(after: i)
                if next == text.endIndex || text[next] == " " {
                    let key = text[text.startIndex..<i]
                    if key.isEmpty { return nil }
                    try checkPlain(key, line: line)
                    return (String(key), text[next...].drop { $0 == " " })
                }
            }
            i = text.index(after: i)
        }
        return nil
    }

    private func blockScalarStyle(_ text: Substring) -> Substring? {
        ["|", "|-", "|+", ">", ">-", ">+"].contains(text) ? text : nil
    }

    /// The lines of a `|` or `>` scalar: everything indented deeper than the parent entry.
    private mutating func blockScalar(style: Substring, parentIndent: Int, line: Int) throws(YAMLError) -> String {
        var body: [Substring] = []
        var contentIndent: Int? = nil
        while index < lines.count {
            let raw = lines[index].raw
            let spaces = raw.prefix { $0 == " " }.count
            let isEmpty = raw.allSatisfy { $0 == " " }
            if !isEmpty && spaces <= parentIndent { break }
            if !isEmpty && contentIndent == nil { contentIndent = spaces }
            if let c = contentIndent, !isEmpty && spaces < c {
                throw fail("a block scalar line is indented less than its first line")
            }
            body.append(isEmpty ? "" : raw.dropFirst(contentIndent ?? 0))
            index += 1
        }
        while body.last == "" { body.removeLast() }
        var text: String
        if style.hasPrefix("|") {
            text = body.joined(separator: "\n")
        } else {
            text = ""
            for (i, piece) in body.enumerated() {
                if i > 0 { text += piece.isEmpty || body[i - 1].isEmpty ? "\n" : " " }
                text += piece
            }
        }
        if !style.hasSuffix("-") && !body.isEmpty { text += "\n" }
        return text
    }

    /// A value on the rest of a line: a quoted or plain scalar, or a one-line flow list/map.
    private func inlineValue(_ text: Substring, line: Int) throws(YAMLError) -> JSON {
        var scanner = FlowScanner(text: text, line: line)
        let value = try scanner.node(inFlow: false)
        scanner.skipSpaces()
        guard scanner.rest.isEmpty else {
            throw YAMLError(line: line, message: "unexpected \"\(scanner.rest.prefix(20))\" after a value")
        }
        return value
    }

    private func checkPlain(_ text: Substring, line: Int) throws(YAMLError) {
        guard let first = text.first else { return }
        switch first {
        case "&": throw YAMLError(line: line, message: "anchors (&) are not supported")
        case "*": throw YAMLError(line: line, message: "aliases (*) are not supported")
        case "!": throw YAMLError(line: line, message: "tags (!) are not supported")
        case "@", "`": throw YAMLError(line: line, message: "a plain scalar cannot start with \"\(first)\"; quote it")
        default: return
        }
    }
}

/// Scans scalars and flow collections within one line.
struct FlowScanner {
    var rest: Substring
    let line: Int
    private var depth = 0

    init(text: Substring, line: Int) {
        rest = text
        self.line = line
    }

    mutating func skipSpaces() { rest = rest.drop { $0 == " " } }

    private func fail(_ message: String) -> YAMLError { YAMLError(line: line, message: message) }

    mutating func node(inFlow: Bool) throws(YAMLError) -> JSON {
        depth += 1
        defer { depth -= 1 }
        if depth > maxYAMLDepth { throw fail("nesting deeper than \(maxYAMLDepth) levels") }
        skipSpaces()
        guard let first = rest.first else { return .null }
        switch first {
        case "[":
            rest = rest.dropFirst()
            var items: [JSON] = []
            skipSpaces()
            if rest.first == "]" {
                rest = rest.dropFirst()
                return .array(items)
            }
            while true {
                items.append(try node(inFlow: true))
                skipSpaces()
                guard let c = rest.first else {
                    throw fail("unterminated flow list; flow lists must end on their line")
                }
                rest = rest.dropFirst()
                if c == "]" { return .array(items) }
                guard c == "," else { throw fail("expected \",\" or \"]\" in a flow list") }
            }
        case "{":
            rest = rest.dropFirst()
            var members: [(String, JSON)] = []
            skipSpaces()
            if rest.first == "}" {
                rest = rest.dropFirst()
                return .object(members)
            }
            while true {
                skipSpaces()
                guard case .string(let key) = try scalar(inFlow: true, stopAtColon: true) else {
                    throw fail("flow map keys must be strings")
                }
                skipSpaces()
                guard rest.first == ":" else { throw fail("expected \":\" after a flow map key") }
                rest = rest.dropFirst()
                members.append((key, try node(inFlow: true)))
                skipSpaces()
                guard let c = rest.first else { throw fail("unterminated flow map; flow maps must end on their line") }
                rest = rest.dropFirst()
                if c == "}" { return .object(members) }
                guard c == "," else { throw fail("expected \",\" or \"}\" in a flow map") }
            }
        default:
            return try scalar(inFlow: inFlow, stopAtColon: false)
        }
    }

    private mutating func scalar(inFlow: Bool, stopAtColon: Bool) throws(YAMLError) -> JSON {
        guard let first = rest.first else { return .null }
        if first == "\"" || first == "'" { return .string(try quoted()) }
        switch first {
        case "&": throw fail("anchors (&) are not supported")
        case "*": throw fail("aliases (*) are not supported")
        case "!": throw fail("tags (!) are not supported")
        case "|", ">": throw fail("a block scalar indicator must end its line")
        default: break
        }
        var end = rest.startIndex
        while end < rest.endIndex {
            let c = rest[end]
            if inFlow && (c == "," || c == "]" || c == "}") { break }
            if stopAtColon && c == ":" { break }
            end = rest.index(after: end)
        }
        var text = rest[rest.startIndex..<end]
        rest = rest[end...]
        while text.last == " " { text = text.dropLast() }
        return stopAtColon ? .string(String(text)) : YAML.plainValue(text)
    }

    /// A single- or double-quoted scalar (on one line).
    mutating func quoted() throws(YAMLError) -> String {
        let q = rest.first!
        rest = rest.dropFirst()
        var out = ""
        while let c = rest.first {
            rest = rest.dropFirst()
            if c == q {
                if q == "'" && rest.first == "'" {
                    rest = rest.dropFirst()
                    out.append("'")
                    continue
                }
                return out
            }
            if c == "\\" && q == "\"" {
                guard let e = rest.first else { break }
                rest = rest.dropFirst()
                switch e {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "0": out.append("\0")
                case "\"", "\\", "/", " ": out.append(e)
                case "u", "x", "U":
                    let width = e == "x" ? 2 : (e == "u" ? 4 : 8)
                    let digits = rest.prefix(width)
                    guard digits.count == width, let code = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(code)
                    else {
                        throw fail("bad \\\(e) escape in a double-quoted string")
                    }
                    rest = rest.dropFirst(width)
                    out.unicodeScalars.append(scalar)
                default: throw fail("unknown escape \\\(e) in a double-quoted string")
                }
                continue
            }
            out.append(c)
        }
        throw fail("unterminated quoted string; multi-line quoted strings are not supported")
    }
}
