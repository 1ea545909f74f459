// Messages from the heatmap webview are untrusted (the webview draws data from files DomLoRA did not write): the
// host acts only on a declared command whose parameters pass its check, and a command names a module, a preset or
// a kind of output, never a path. Malformed and hostile messages, each dropped with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CancelCommand, checkCommand, CommandType, ExportCommand, PlaceCommand, ReadyCommand, RerunProbeCommand, RevealCommand,
  TrainCommand, valid,
} from '../../src/protocol/webview';

test('every command the webview sends is accepted as it sends it', () => {
  const good = [
    ReadyCommand.make({ modelDir: '/w/tiny' }), ReadyCommand.make({}), PlaceCommand.make({ module: 'model.layers.0.self_attn.q_proj' }),
    PlaceCommand.make({}), TrainCommand.make({ preset: 'domlora' }), TrainCommand.make({ preset: 'vanilla' }), ExportCommand.make({}),
    ExportCommand.make({ preset: 'vanilla' }), CancelCommand.make({}), RerunProbeCommand.make({}),
    RevealCommand.make({ what: 'report' }), RevealCommand.make({ what: 'adapter', preset: 'domlora' }),
  ];
  for (const m of good) {
    // Through a structured clone, as postMessage delivers it.
    const r = checkCommand(structuredClone(m));
    assert.ok(r.ok, `${JSON.stringify(m)}: ${r.ok ? '' : r.why}`);
    assert.deepEqual(r.msg, JSON.parse(JSON.stringify(m)));
  }
});

test('malformed and hostile messages are dropped, each with its reason', () => {
  const proto = JSON.parse('{"method": "train", "params": {"preset": "domlora", "__proto__": {"polluted": true}}}');
  const cases: [unknown, RegExp][] = [
    [null, /not an object/], [42, /not an object/], ['train', /not an object/], [[{ method: 'train' }], /not an object/],
    [{}, /no method/], [{ method: 7, params: {} }, /no method/],
    [{ method: 'runShell', params: { cmd: 'rm -rf ~' } }, /unknown method "runShell"/],
    [{ method: '__proto__', params: {} }, /unknown method/], [{ method: 'constructor', params: {} }, /unknown method/],
    [{ method: 'toString', params: {} }, /unknown method/], [{ method: 'state', params: {} }, /unknown method "state"/],
    [{ method: 'train' }, /train: the parameters do not have the declared type/],
    [{ method: 'train', params: null }, /declared type/], [{ method: 'train', params: 'domlora' }, /declared type/],
    [{ method: 'train', params: { preset: 'evil' } }, /declared type/],
    [{ method: 'train', params: { preset: 'domlora', out: '/etc' } }, /declared type/],
    [proto, /declared type/],
    [{ method: 'train', params: { preset: 'domlora' }, out: '/etc' }, /unexpected fields/],
    [{ method: 'place', params: { module: 42 } }, /declared type/],
    [{ method: 'place', params: { module: '' } }, /declared type/],
    [{ method: 'place', params: { module: 'x'.repeat(513) } }, /declared type/],
    [{ method: 'place', params: { module: 'q_proj\n$(rm -rf ~)' } }, /declared type/],
    [{ method: 'place', params: { module: ['q_proj'] } }, /declared type/],
    [{ method: 'reveal', params: { path: '/etc/passwd' } }, /reveal: the parameters do not have the declared type/],
    [{ method: 'reveal', params: { what: 'adapter' } }, /declared type/],
    [{ method: 'reveal', params: { what: 'report', path: '/etc/passwd' } }, /declared type/],
    [{ method: 'reveal', params: { what: 'file', preset: 'domlora' } }, /declared type/],
    [{ method: 'cancel', params: { all: true } }, /declared type/],
    [{ method: 'ready', params: { modelDir: 'x'.repeat(5000) } }, /declared type/],
    [{ method: 'export', params: { preset: 'domlora', format: 'merged', out: '/tmp/x' } }, /declared type/],
  ];
  for (const [msg, why] of cases) {
    const r = checkCommand(msg);
    assert.equal(r.ok, false, `accepted ${JSON.stringify(msg)}`);
    assert.match((r as { why: string }).why, why, JSON.stringify(msg));
  }
});

test('a command declared anywhere is checked by its own declaration; two of one name are refused', () => {
  const Probe = new CommandType<{ samples: number }>('test/samples', (v): v is { samples: number } =>
    valid.object({ samples: (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0 })(v));
  assert.ok(checkCommand(Probe.make({ samples: 4 })).ok);
  assert.equal(checkCommand({ method: 'test/samples', params: { samples: -1 } }).ok, false);
  assert.throws(() => new CommandType('test/samples', valid.object({})), /two webview commands are named test\/samples/);
  // An object whose prototype is not Object's (a class instance, a null-prototype object) is not plain JSON.
  assert.equal(checkCommand({ method: 'cancel', params: Object.create(null) }).ok, false);
  assert.equal(checkCommand({ method: 'cancel', params: new Date() }).ok, false);
});
