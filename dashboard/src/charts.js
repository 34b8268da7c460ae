// Chart.js, with only the parts the dashboard draws. Every chart has a text alternative: its
// canvas carries an aria-label that states the main numbers, and a table sits beside it.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from 'chart.js';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.color = '#3b4452';
Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

/** Colours with at least 4.5:1 contrast on white, told apart by more than hue (dashes, axes). */
export const palette = { blue: '#1f5fbf', orange: '#a4470b', green: '#2b7a3b' };

const charts = new Map();

/**
 * Draws (or redraws) a line chart over time buckets.
 * @param {HTMLCanvasElement} canvas
 * @param {string[]} labels
 * @param {{label: string, data: (number|null)[], color: string, axis: 'y'|'y1', dashed?: boolean, format: (v: number) => string}[]} series
 * @param {{y: string, y1: string, yFormat: (v: number) => string, y1Format: (v: number) => string}} axes
 */
export function lineChart(canvas, labels, series, axes) {
  const datasets = series.map((s) => ({
    label: s.label,
    data: s.data,
    borderColor: s.color,
    backgroundColor: s.color,
    borderDash: s.dashed ? [6, 4] : [],
    borderWidth: 2,
    pointRadius: labels.length > 60 ? 0 : 2,
    yAxisID: s.axis,
    spanGaps: false,
    tooltipFormat: s.format,
  }));
  draw(canvas, {
    type: 'line',
    data: { labels, datasets },
    options: {
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 } },
        y: {
          position: 'left',
          beginAtZero: true,
          title: { display: true, text: axes.y },
          ticks: { callback: (v) => axes.yFormat(v) },
        },
        y1: {
          position: 'right',
          beginAtZero: true,
          title: { display: true, text: axes.y1 },
          grid: { drawOnChartArea: false },
          ticks: { callback: (v) => axes.y1Format(v) },
        },
      },
      plugins: {
        legend: { position: 'bottom' },
        tooltip: {
          callbacks: {
            label: (ctx) => `${ctx.dataset.label}: ${ctx.dataset.tooltipFormat(ctx.parsed.y)}`,
          },
        },
      },
    },
  });
}

/**
 * Draws (or redraws) a bar chart of one measure by category, biggest first.
 * @param {HTMLCanvasElement} canvas
 * @param {string[]} labels
 * @param {number[]} values
 * @param {{label: string, format: (v: number) => string, horizontal?: boolean, color?: string}} opts
 */
export function barChart(canvas, labels, values, opts) {
  const valueAxis = opts.horizontal ? 'x' : 'y';
  draw(canvas, {
    type: 'bar',
    data: {
      labels,
      datasets: [{ label: opts.label, data: values, backgroundColor: opts.color || palette.blue }],
    },
    options: {
      indexAxis: opts.horizontal ? 'y' : 'x',
      scales: {
        [valueAxis]: { beginAtZero: true, ticks: { callback: (v) => opts.format(v) } },
      },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { label: (ctx) => `${opts.label}: ${opts.format(ctx.parsed[valueAxis])}` } },
      },
    },
  });
}

function draw(canvas, config) {
  const existing = charts.get(canvas);
  if (existing && existing.config.type === config.type) {
    existing.data = config.data;
    existing.options = config.options;
    existing.update('none');
    return;
  }
  existing?.destroy();
  charts.set(canvas, new Chart(canvas, config));
}
