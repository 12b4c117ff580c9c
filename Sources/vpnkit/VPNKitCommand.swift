import ArgumentParser

@main
struct VPNKitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vpnkit",
        abstract: "A userspace TCP/IP stack and NAT for virtual machines and network namespaces.",
        subcommands: [DecodeCommand.self]
    )
}
