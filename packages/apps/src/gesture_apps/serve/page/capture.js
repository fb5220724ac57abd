// AudioWorklet for the microphone: gathers the 128-sample render quanta into chunks of
// `processorOptions.chunk` samples (the first channel) and posts each to the page.
class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = new Float32Array(options.processorOptions.chunk);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let i = 0;
      while (i < channel.length) {
        const n = Math.min(channel.length - i, this.chunk.length - this.filled);
        this.chunk.set(channel.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.chunk.length) {
          this.port.postMessage(this.chunk.slice());
          this.filled = 0;
        }
      }
    }
    return true; // keep running while the microphone is open
  }
}

registerProcessor("capture", Capture);
