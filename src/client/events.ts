/**
 * A typed event emitter whose listeners cannot hurt the session that feeds them.
 *
 * Why not EventTarget or EventEmitter: with either, an exception thrown by one listener escapes (DOM
 * EventTarget reports it as an uncaught error, which ends a Bun or Node process; EventEmitter throws it
 * into the emitter, here the stream's receive path). An application bug in an `audio` handler must not end
 * the call or skip other listeners, so each listener runs in its own try/catch and its error goes to
 * `onListenerError` (default: console.error, once per listener).
 */
export type Listener<T> = (detail: T) => void;

export class SafeEmitter<Events extends Record<string, unknown>> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();
  private readonly reported = new WeakSet<Listener<never>>();

  constructor(private readonly onListenerError?: (type: keyof Events, err: unknown) => void) {}

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(type, listener);
  }

  /** Adds a listener that runs once. */
  once<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(type, (d) => {
      off();
      listener(d);
    });
    return off;
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.listeners.get(type)?.delete(listener as Listener<never>);
  }

  listenerCount(type: keyof Events): number {
    return this.listeners.get(type)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(type: K, detail: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const l of [...set]) {
      try {
        (l as Listener<Events[K]>)(detail);
      } catch (err) {
        if (this.onListenerError) this.onListenerError(type, err);
        else if (!this.reported.has(l)) {
          this.reported.add(l);
          console.error(`agora client: a '${String(type)}' listener threw (reported once):`, err);
        }
      }
    }
  }
}
