import ArgumentParser


struct VPNKitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vpnkit",
        abstract: "A userspace TCP/IP stack and NAT for virtual machines and network namespaces.",
        subcommands: [DecodeCommand.self, RunCommand.self, StatsCommand.self]
    )
}
