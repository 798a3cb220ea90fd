/// One problem with a request, as FastAPI (and so AUTOMATIC1111) reports it in a 422 response:
/// `{"detail": [{"loc": ["body", "width"], "msg": "...", "type": "less_than_equal"}]}`.
public struct ValidationIssue: Sendable, Equatable, Encodable {
    /// Where: `["body", FIELD]`, or `["body"]` for the whole body.
    public var loc: [String]
    public var msg: String
    /// FastAPI/pydantic error type (`int_type`, `less_than_equal`, `json_invalid`, `value_error`, …).
    public var type: String

    public init(field: String?, _ msg: String, type: String) {
        self.loc = field.map { ["body", $0] } ?? ["body"]
        self.msg = msg
        self.type = type
    }

    /// The field name (`loc[1]`), or nil for the whole body.
    public var field: String? { loc.count > 1 ? loc[1] : nil }
}

/// A request that failed validation: every issue found, answered with 422.
public struct ValidationFailure: Error, Sendable, Equatable, Encodable, CustomStringConvertible {
    public var detail: [ValidationIssue]

    public init(_ detail: [ValidationIssue]) { self.detail = detail }

    public var description: String {
        detail.map { "\($0.loc.joined(separator: ".")): \($0.msg)" }.joined(separator: "; ")
    }
}
