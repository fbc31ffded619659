/** Host load figures (CPU and memory percent) for the advertisement and dashboard. */
import { cpus, freemem, totalmem } from "node:os";

export class SystemSampler {
  private last = process.cpuUsage();
  private lastAt = performance.now();
  private cpuPercent = 0;

  /** Process CPU use since the previous call, as percent of all cores. */
  sample(): { cpu_percent: number; mem_percent: number; rss_bytes: number } {
    const now = performance.now();
    const usage = process.cpuUsage();
    const elapsedUs = (now - this.lastAt) * 1000;
    if (elapsedUs > 100_000) {
      const used = usage.user - this.last.user + (usage.system - this.last.system);
      this.cpuPercent = Math.min(100, (used / elapsedUs / Math.max(1, cpus().length)) * 100);
      this.last = usage;
      this.lastAt = now;
    }
    const total = totalmem();
    return {
      cpu_percent: Math.round(this.cpuPercent * 10) / 10,
      mem_percent: Math.round(((total - freemem()) / total) * 1000) / 10,
      rss_bytes: process.memoryUsage.rss(),
    };
  }
}
