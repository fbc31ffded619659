#!/usr/bin/env bun
/** agora-node entry point: the compiled executable starts here. */
import { main } from "./cli";

const code = await main(process.argv.slice(2));
process.exit(code);
