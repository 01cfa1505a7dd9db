// The page of `lrformer serve`: upload an image, show the overlay, the legend and a download link.
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;
let photo = null;   // the uploaded image (ImageBitmap)
let labels = null;  // the label map drawn in its palette colours (canvas)

async function loadModel() {
  const response = await fetch("/model");
  model = await response.json();
  $("model").textContent = `${model.name || "model"}: ${model.num_classes} classes`;
}

function draw() {
  const canvas = $("canvas");
  canvas.width = photo.width;
  canvas.height = photo.height;
  const context = canvas.getContext("2d");
  context.globalAlpha = 1;
  context.drawImage(photo, 0, 0);
  context.globalAlpha = Number($("opacity").value);
  context.drawImage(labels, 0, 0);
}

function legend() {
  // count the pixels of each palette colour of the label map
  const data = labels.getContext("2d").getImageData(0, 0, labels.width, labels.height).data;
  const index = new Map(model.palette.map((c, i) => [(c[0] << 16) | (c[1] << 8) | c[2], i]));
  const counts = new Map();
  for (let p = 0; p < data.length; p += 4) {
    const id = index.get((data[p] << 16) | (data[p + 1] << 8) | data[p + 2]);
    counts.set(id, (counts.get(id) || 0) + 1);
  }
  const total = labels.width * labels.height;
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  [...counts.entries()].sort((a, b) => b[1] - a[1]).forEach(([id, count]) => {
    const row = body.insertRow();
    row.className = "entry";
    row.dataset.classId = String(id);
    const swatch = row.insertCell();
    swatch.className = "swatch";
    const color = id === undefined ? [0, 0, 0] : model.palette[id];
    swatch.style.background = `rgb(${color.join(",")})`;
    row.insertCell().textContent = id === undefined ? "(other)" : model.classes[id];
    row.insertCell().textContent = `${(100 * count / total).toFixed(1)}%`;
  });
}

async function segment(file) {
  $("status").className = "";
  $("status").textContent = `segmenting ${file.name}…`;
  const form = new FormData();
  form.append("image", file);
  const started = performance.now();
  const response = await fetch("/predict?format=png", { method: "POST", body: form });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ error: response.statusText }));
    $("status").className = "error";
    $("status").textContent = `error ${response.status}: ${problem.error}`;
    return;
  }
  const png = await response.blob();
  photo = await createImageBitmap(file);
  const bitmap = await createImageBitmap(png);
  labels = document.createElement("canvas");
  labels.width = bitmap.width;
  labels.height = bitmap.height;
  labels.getContext("2d").drawImage(bitmap, 0, 0);
  $("download").href = URL.createObjectURL(png);
  $("download").download = file.name.replace(/\.[^.]*$/, "") + "_label.png";
  $("result").hidden = false;
  draw();
  legend();
  $("status").textContent = `${file.name}: ${photo.width}×${photo.height}, ${Math.round(performance.now() - started)} ms`;
  document.body.dataset.done = "1";
}

$("file").addEventListener("change", (event) => event.target.files[0] && segment(event.target.files[0]));
$("opacity").addEventListener("input", () => photo && draw());
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) segment(event.dataTransfer.files[0]);
});
loadModel();
