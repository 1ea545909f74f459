// A full wasm heap on the stock single-threaded module: test/helpers/wasmfault.ts.
import { test } from 'node:test';
import { fullHeapStopsTheJob, FULL_HEAP_TEST } from '../helpers/wasmfault';

test(`${FULL_HEAP_TEST} (single-threaded module)`, () => fullHeapStopsTheJob(1));
