public import Foundation
public import Testing

/// Under `CI=true` a test that needs something this machine lacks (root, namespaces, qemu, a tool,
/// tcpdump's corpus) runs and fails with the reason instead of being skipped: a green CI run then
/// means the interop tests really ran. Elsewhere such a test is skipped with the reason printed.
public let missingRequirementsFail = ProcessInfo.processInfo.environment["CI"] == "true"

/// The condition for `.enabled(if:)` beside `.requires(_:_:)`: true where the requirement is met,
/// and always under `CI=true`, where `.requires` then records the failure.
public func runsHere(_ met: Bool) -> Bool { met || missingRequirementsFail }

/// A trait that fails every test it covers, with `reason`, when its requirement is not met (it is
/// reached only under `CI=true`: elsewhere `.enabled(if: runsHere(met))` skips first).
public struct Requirement: TestTrait, SuiteTrait, TestScoping {
    let met: Bool
    let reason: String

    public var isRecursive: Bool { true }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Requirement? {
        met || test.isSuite ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        Issue.record(Comment(rawValue: "CI=true and a requirement is missing: \(reason)"))
    }
}

extension Trait where Self == Requirement {
    /// Fails (under `CI=true`) instead of running when `met` is false; pair with
    /// `.enabled(if: runsHere(met), reason)`.
    public static func requires(_ met: Bool, _ reason: Comment) -> Self { Requirement(met: met, reason: reason.rawValue) }
}

/// tcpdump's capture corpus, when the environment names it (`VPNKIT_TCPDUMP_CORPUS`; `.ci/run`
/// sets it where the corpus is at hand). The tests that read it skip without it.
public let tcpdumpCorpusDirectory: URL? = {
    guard let path = ProcessInfo.processInfo.environment["VPNKIT_TCPDUMP_CORPUS"], !path.isEmpty else { return nil }
    return URL(fileURLWithPath: path)
}()

/// Why corpus tests skip.
public let corpusSkipReason: Comment = "skipped: VPNKIT_TCPDUMP_CORPUS does not name a folder of tcpdump's captures"

/// Whether the corpus is present.
public var hasTcpdumpCorpus: Bool {
    guard let directory = tcpdumpCorpusDirectory else { return false }
    return FileManager.default.fileExists(atPath: directory.path)
}
