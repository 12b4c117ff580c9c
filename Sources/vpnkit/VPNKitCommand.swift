import ArgumentParser

/// The root command: `decode`, `run`, `stats`, `slirp4netns`, and the control API's clients
/// `publish`, `unpublish`, `forwards` and `flows`. With no arguments it prints its help (exit 0);
/// `--version` prints `version`. vpnkit's own flags (`vpnkit --ethernet …`) never reach it
/// (`UpstreamCommandLine`).
struct VPNKitCommand: AsyncParsableCommand {
    /// The release this binary is.
    static let version = "0.9.0"

    static let configuration = CommandConfiguration(
        commandName: "vpnkit",
        abstract: "A userspace TCP/IP stack and NAT for virtual machines and network namespaces.",
        version: version,
        subcommands: [
            DecodeCommand.self, RunCommand.self, StatsCommand.self, PublishCommand.self, UnpublishCommand.self, ForwardsCommand.self,
            FlowsCommand.self, ConfinementTestCommand.self,
        ] + linuxOnly
    )
}

#if os(Linux)
/// Subcommands that need network namespaces and TAP devices.
private let linuxOnly: [any ParsableCommand.Type] = [Slirp4netnsCommand.self]
#else
private let linuxOnly: [any ParsableCommand.Type] = []
#endif
