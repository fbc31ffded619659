/** `identity show|new`. */
import { AgoraError } from "../errors";
import { createIdentity, readIdentity } from "../node";
import { EXIT_OK, type Parsed } from "./args";
import { type Io, loadForCommand } from "./context";

export async function runIdentity(p: Parsed, io: Io): Promise<number> {
  const sub = p.positionals[0];
  const keyFile = typeof p.values["key-file"] === "string" ? p.values["key-file"] : undefined;
  if (sub === "new") {
    if (!keyFile) throw new AgoraError("USAGE", "identity new: --key-file FILE is required (an existing identity is never overwritten)");
    const id = await createIdentity(keyFile);
    io.out(p.values.json ? JSON.stringify({ peer_id: id.peerId, key_file: id.keyFile }) : `created ${id.keyFile}\npeer id ${id.peerId}`);
    return EXIT_OK;
  }
  if (sub === "show") {
    const file = keyFile ?? loadForCommand(p.values, io.env).config.identity.key_file;
    const id = readIdentity(file);
    if (id.permissionWarning) io.err(`warning: ${id.permissionWarning}`);
    io.out(
      p.values.json
        ? JSON.stringify({ peer_id: id.peerId, key_file: id.keyFile, type: "Ed25519" })
        : `peer id  ${id.peerId}\nkey file ${id.keyFile} (Ed25519)`,
    );
    return EXIT_OK;
  }
  throw new AgoraError("USAGE", `identity: unknown subcommand "${sub}"; expected show or new`);
}
