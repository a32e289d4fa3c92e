// The control API the client commands use (our stand-in for the Kubernetes API server), served on the
// controller's loop. Plain text answers, ready to print:
//   POST   /v1/apply?namespace=NS          body: manifest text → "service.serving.knative.dev/x created" lines
//                                           400 = denied by validation, 422 = unparsable
//   GET    /v1/get?kind=K[&name=N][&namespace=NS][&output=json]
//   DELETE /v1/services/NS/NAME
import KnativeWire
import ProxyCore

final class ControlAPI: HTTPResponder {
    private unowned(unsafe) let controller: Controller  // the controller lives as long as kn-local serve

    init(controller: Controller) { self.controller = controller }

    var collectsBodies: Bool { true }

    func dispose(_ request: RequestView) -> Disposition {
        let method = request.string(request.head.method)
        let target = request.string(request.head.target)
        let path = String(target.prefix { $0 != "?" })
        var query: [String: String] = [:]
        if let q = target.firstIndex(of: "?") {
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let key = parts.first, !key.isEmpty else { continue }
                query[String(key)] = parts.count > 1 ? percentDecoded(parts[1]) : ""
            }
        }
        let segments = path.split(separator: "/").map(String.init)
        switch (method, segments.first == "v1" ? Array(segments.dropFirst()) : []) {
        case ("POST", ["apply"]):
            do {
                let text = String(decoding: request.body, as: UTF8.self)
                let lines = try controller.apply(text, namespace: query["namespace"])
                return text200(lines.joined(separator: "\n") + "\n")
            } catch let error as ManifestError where error.description.hasPrefix("admission webhook") {
                return .respond(.text(400, error.description + "\n"))
            } catch {
                return .respond(.text(422, "\(error)\n"))
            }
        case ("GET", ["get"]):
            do {
                let kind = query["kind"] ?? ""
                let name = query["name"].flatMap { $0.isEmpty ? nil : $0 }
                let namespace = query["namespace"].flatMap { $0.isEmpty ? nil : $0 } ?? "default"
                let text = try controller.table(
                    kind: kind, namespace: namespace, name: name, json: query["output"] == "json",
                    wide: query["output"] == "wide")
                if query["output"] != "json" && text.split(separator: "\n").count <= 1 {
                    if let name {
                        return .respond(
                            .text(
                                404,
                                "Error from server (NotFound): \(Controller.resourceName(kind)) \"\(name)\" not found\n"
                            ))
                    }
                    return text200("No resources found in \(namespace) namespace.\n")
                }
                return text200(text)
            } catch {
                return .respond(.text(400, "\(error)\n"))
            }
        case ("DELETE", let parts) where parts.count == 3 && parts[0] == "services":
            if controller.deleteService(namespace: parts[1], name: parts[2]) {
                return text200("service.serving.knative.dev \"\(parts[2])\" deleted\n")
            }
            return .respond(
                .text(404, "Error from server (NotFound): services.serving.knative.dev \"\(parts[2])\" not found\n"))
        default:
            return .respond(.text(404, "404 page not found\n"))
        }
    }

    private func text200(_ text: String) -> Disposition { .respond(.text(200, text)) }

    private func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i < utf8.endIndex {
            let b = utf8[i]
            if b == UInt8(ascii: "%"), let end = utf8.index(i, offsetBy: 3, limitedBy: utf8.endIndex),
                let v = UInt8(String(decoding: utf8[utf8.index(after: i)..<end], as: UTF8.self), radix: 16)
            {
                bytes.append(v)
                i = end
                continue
            }
            bytes.append(b == UInt8(ascii: "+") ? 32 : b)
            i = utf8.index(after: i)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
