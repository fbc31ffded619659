/**
 * An in-memory room directory shared by several RoomHosts in one test process: the same claim/resolve
 * semantics as the DHT directory (winning record: higher epoch, then `active` over `handing-over`, then the
 * host id that sorts first), without a network. `partition` makes hosts see only their own side's records.
 */
import type { LocatedRoom, MixerCandidate, RoomLocator } from "../../src/client";
import type { RoomDirectoryPort, RoomHostRecord } from "../../src/rooms";

export class MemoryRoomDirectory {
  /** room → host → record */
  readonly records = new Map<string, Map<string, RoomHostRecord>>();
  /** peer → side; records of hosts on another side are invisible (a partition) */
  sides = new Map<string, number>();
  mixers: MixerCandidate[] = [];
  resolves = 0;

  winner(room: string, viewer?: string): RoomHostRecord | undefined {
    const side = viewer === undefined ? undefined : this.sides.get(viewer);
    const recs = [...(this.records.get(room)?.values() ?? [])].filter(
      (r) => side === undefined || (this.sides.get(r.host) ?? side) === side,
    );
    recs.sort(
      (a, b) =>
        b.epoch - a.epoch ||
        (a.status === b.status ? 0 : a.status === "active" ? -1 : 1) ||
        (a.host < b.host ? -1 : a.host > b.host ? 1 : 0),
    );
    return recs[0];
  }

  port(self: string, region: string, addrs: () => string[]): RoomDirectoryPort {
    const put = (rec: RoomHostRecord) => {
      const m = this.records.get(rec.room) ?? new Map<string, RoomHostRecord>();
      this.records.set(rec.room, m);
      m.set(rec.host, rec);
    };
    return {
      resolve: async (room) => {
        this.resolves++;
        return this.winner(room, self);
      },
      claim: async (room, epoch) => put({ room, region, host: self, addrs: addrs(), epoch, status: "active" }),
      handOver: async (room, epoch, successor) =>
        put({ room, region, host: self, addrs: addrs(), epoch, status: "handing-over", successor }),
      release: async (room) => {
        this.records.get(room)?.delete(self);
      },
    };
  }

  locator(viewer?: string): RoomLocator {
    return {
      resolve: async (room): Promise<LocatedRoom | undefined> => {
        const w = this.winner(room, viewer);
        return w && { host: w.host, addrs: w.addrs, epoch: w.epoch, status: w.status, successor: w.successor };
      },
      mixers: async () => this.mixers.map((m) => ({ ...m })),
    };
  }
}
