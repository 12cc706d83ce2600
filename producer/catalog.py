"""The 200-product food catalog, made from templates and a seed (no network, no model).

Each of the 8 categories has a list of dishes (name, what is in it, a price band) and a few
sentence templates; the seed picks 25 dishes per category, a style word, the sentence
template and the price within the band, so descriptions read like a menu and carry words the
text embedding can separate. The ids are ``p000``..``p199``, category by category.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from contract.features import CATALOG_FIELDS, CATEGORIES, Product

PER_CATEGORY = 25

# (dish, ingredients, low price, high price) per category; >= 25 dishes each.
_DISHES: dict[str, list[tuple[str, str, float, float]]] = {
    "Appetizers & Sides": [
        ("Garlic Bread", "toasted baguette, garlic butter and parsley", 6, 9),
        ("Cheesy Garlic Bread", "baguette, garlic butter and melted mozzarella", 7, 10),
        ("Beer-Battered Chips", "thick-cut potatoes in a crisp beer batter with aioli", 7, 10),
        ("Sweet Potato Fries", "sweet potato wedges, smoked paprika salt and chipotle mayo", 8, 11),
        ("Onion Rings", "sliced onion in a golden batter with tomato relish", 7, 10),
        ("Salt and Pepper Squid", "tender squid, cracked pepper, sea salt and lemon", 13, 18),
        ("Chicken Wings", "crispy wings tossed in buffalo sauce with blue cheese dip", 12, 17),
        ("Bruschetta", "grilled sourdough, tomato, basil, red onion and balsamic", 9, 13),
        ("Arancini", "risotto balls stuffed with mozzarella and peas, napoli sauce", 11, 15),
        ("Mozzarella Sticks", "breaded mozzarella, marinara dip", 9, 12),
        ("Potato Wedges", "seasoned wedges with sour cream and sweet chilli", 8, 11),
        ("Loaded Fries", "chips, melted cheese, bacon bits and spring onion", 11, 15),
        ("Spring Rolls", "vegetable spring rolls with sweet chilli sauce", 8, 11),
        ("Dumplings", "pan-fried pork and chive dumplings with black vinegar", 10, 14),
        ("Edamame", "steamed soy beans with sea salt and chilli flakes", 6, 9),
        ("Prawn Cocktail", "poached prawns, iceberg lettuce and Marie Rose sauce", 15, 20),
        ("Crumbed Calamari Rings", "calamari rings, tartare sauce and lemon", 12, 16),
        ("Hummus Plate", "chickpea hummus, olive oil, paprika and warm pita", 9, 12),
        ("Corn Ribs", "charred corn, lime butter and cotija cheese", 8, 11),
        ("Jalapeno Poppers", "jalapenos filled with cream cheese, crumbed and fried", 9, 13),
        ("Mac and Cheese Bites", "macaroni, cheddar sauce, crumbed and fried", 9, 12),
        ("Cauliflower Bites", "battered cauliflower in sticky soy glaze and sesame", 10, 13),
        ("Steamed Greens", "broccolini, green beans, garlic and lemon butter", 7, 10),
        ("Dinner Rolls", "warm bread rolls with whipped salted butter", 5, 7),
        ("Antipasto Board", "cured meats, olives, marinated vegetables and grissini", 18, 26),
        ("Haloumi Fries", "fried haloumi batons with honey and pomegranate", 11, 15),
    ],
    "Aussie Pub Classics": [
        ("Chicken Parmigiana", "crumbed chicken breast, ham, napoli and cheese, chips and salad",
         24, 30),
        ("Chicken Schnitzel", "crumbed chicken breast with chips, salad and gravy", 21, 27),
        ("Beef and Guinness Pie", "slow-cooked beef in stout gravy under flaky pastry, mash",
         22, 28),
        ("Fish and Chips", "beer-battered flathead, chips, salad and tartare", 23, 29),
        ("Bangers and Mash", "pork sausages, creamy mash, peas and onion gravy", 20, 25),
        ("Porterhouse Steak", "300g grass-fed porterhouse, chips, salad and pepper sauce", 36, 44),
        ("Scotch Fillet", "350g scotch fillet, mash, greens and red wine jus", 40, 48),
        ("Rump Steak", "250g rump, chips, salad and mushroom sauce", 28, 34),
        ("Lamb Shank", "braised lamb shank, mash, roast vegetables and rosemary jus", 30, 37),
        ("Surf and Turf", "eye fillet topped with garlic prawns, chips and salad", 42, 50),
        ("Pork Belly", "crispy pork belly, apple slaw and cider jus", 29, 35),
        ("Roast of the Day", "roast meat, roast potatoes, seasonal vegetables and gravy", 24, 30),
        ("Beef Ribs", "slow-smoked beef ribs, barbecue glaze, chips and slaw", 38, 46),
        ("Chicken Kiev", "garlic butter filled chicken, mash and peas", 23, 28),
        ("Mixed Grill", "steak, sausage, lamb cutlet, bacon and egg with chips", 39, 47),
        ("Meat Pie and Peas", "minced beef pie with mushy peas and tomato sauce", 16, 20),
        ("Barramundi Fillet", "pan-seared barramundi, crushed potatoes and lemon butter", 32, 38),
        ("Lamb Cutlets", "grilled lamb cutlets, minted peas and roast potatoes", 37, 44),
        ("Chicken Parma Deluxe", "parmigiana with bacon, avocado and extra cheese, chips",
         27, 33),
        ("Sausage Sizzle Plate", "beef sausages, grilled onions, bread and mustard", 15, 19),
        ("Pulled Pork Plate", "smoked pulled pork, corn bread and pickles", 25, 31),
        ("T-Bone Steak", "400g T-bone, chips, salad and garlic butter", 41, 49),
        ("Crumbed Barramundi", "crumbed barramundi, chips, salad and tartare", 27, 33),
        ("Shepherd's Pie", "lamb mince, vegetables and a cheesy mash crust", 21, 26),
        ("Beef Stroganoff", "beef strips, mushrooms and sour cream on rice", 24, 29),
        ("Kangaroo Fillet", "seared kangaroo fillet, sweet potato mash and bush tomato chutney",
         33, 40),
    ],
    "Burgers & Sandwiches": [
        ("Classic Cheeseburger", "beef patty, cheddar, pickles, onion, mustard and ketchup",
         15, 19),
        ("Aussie Burger", "beef patty, beetroot, fried egg, bacon, pineapple and lettuce", 18, 23),
        ("Crispy Chicken Burger", "fried chicken thigh, slaw and sriracha mayo", 16, 20),
        ("Double Bacon Burger", "two beef patties, bacon, cheese and smoky barbecue sauce", 20, 25),
        ("Veggie Burger", "chickpea and quinoa patty, avocado, tomato and rocket", 16, 20),
        ("Pulled Pork Slider", "pulled pork, apple slaw and chipotle on a brioche bun", 14, 18),
        ("Steak Sandwich", "grilled minute steak, caramelised onion, cheese and aioli", 19, 24),
        ("Club Sandwich", "chicken, bacon, egg, lettuce and tomato on toasted bread", 15, 19),
        ("BLT", "crispy bacon, lettuce and tomato with mayo on sourdough", 13, 16),
        ("Reuben", "corned beef, sauerkraut, Swiss cheese and Russian dressing on rye", 17, 21),
        ("Fish Burger", "battered fish, tartare, lettuce and lemon", 16, 20),
        ("Mushroom Swiss Burger", "beef patty, sauteed mushrooms and Swiss cheese", 17, 21),
        ("Lamb Burger", "lamb patty, tzatziki, feta and roasted capsicum", 18, 22),
        ("Chicken Schnitzel Wrap", "crumbed chicken, lettuce, cheese and garlic sauce", 14, 18),
        ("Philly Cheesesteak", "shaved beef, peppers, onions and melted provolone", 18, 22),
        ("Cuban Sandwich", "roast pork, ham, Swiss cheese, pickles and mustard", 16, 20),
        ("Toasted Ham and Cheese", "leg ham and cheddar toasted on white bread", 9, 12),
        ("Chicken Avocado Wrap", "grilled chicken, avocado, lettuce and lime mayo", 14, 17),
        ("Wagyu Burger", "wagyu patty, truffle mayo, aged cheddar and onion jam", 25, 31),
        ("Smash Burger", "two smashed patties, American cheese and house sauce", 17, 21),
        ("Katsu Sandwich", "panko pork cutlet, cabbage and tonkatsu sauce on milk bread",
         16, 20),
        ("Falafel Wrap", "falafel, hummus, tabouli and pickled turnip", 13, 16),
        ("Meatball Sub", "beef meatballs, napoli and mozzarella in a toasted roll", 15, 19),
        ("Egg and Bacon Roll", "fried egg, bacon and barbecue sauce on a soft roll", 10, 13),
        ("Prawn Roll", "prawns, cos lettuce and Marie Rose sauce in a brioche roll", 19, 24),
        ("Chicken Burger Deluxe", "grilled chicken, bacon, cheese and avocado", 19, 23),
    ],
    "Drinks & Desserts": [
        ("Flat White", "double shot espresso with velvety steamed milk", 4, 5.5),
        ("Cappuccino", "espresso, steamed milk, thick foam and chocolate dust", 4, 5.5),
        ("Iced Latte", "espresso over ice with cold milk", 5, 6.5),
        ("Iced Chocolate", "chocolate milk, vanilla ice cream and whipped cream", 6, 8),
        ("Chai Latte", "spiced chai with steamed milk and honey", 4.5, 6),
        ("Fresh Orange Juice", "freshly squeezed oranges", 6, 8),
        ("Mango Smoothie", "mango, yoghurt, honey and ice", 7, 9),
        ("Berry Smoothie", "mixed berries, banana, yoghurt and oats", 7, 9),
        ("Green Smoothie", "spinach, kiwi, apple, banana and coconut water", 7.5, 9.5),
        ("Chocolate Milkshake", "thick chocolate shake with malt", 7, 9),
        ("Lemon Lime and Bitters", "lemonade, lime cordial and Angostura bitters", 5, 7),
        ("Sticky Date Pudding", "warm date sponge, butterscotch sauce and vanilla ice cream",
         11, 14),
        ("Pavlova", "meringue, whipped cream, passionfruit and fresh berries", 11, 14),
        ("Chocolate Lava Cake", "molten chocolate cake with raspberry coulis", 12, 15),
        ("Apple Crumble", "baked apples, oat crumble and custard", 10, 13),
        ("Lamington", "sponge cake dipped in chocolate and coconut", 5, 7),
        ("Cheesecake", "New York baked cheesecake with berry compote", 11, 14),
        ("Tiramisu", "espresso-soaked savoiardi, mascarpone and cocoa", 12, 15),
        ("Banana Bread", "toasted banana bread with whipped butter", 6, 8),
        ("Croissant", "all-butter croissant, jam and butter", 5, 7),
        ("Acai Bowl", "acai, granola, banana, berries and coconut", 13, 16),
        ("Affogato", "vanilla gelato drowned in a shot of espresso", 7, 9),
        ("Churros", "cinnamon sugar churros with chocolate dipping sauce", 9, 12),
        ("Hot Chocolate", "rich Belgian chocolate with steamed milk and marshmallows", 5, 6.5),
        ("Gelato Trio", "three scoops of house-made gelato", 9, 12),
        ("Cold Brew", "slow-steeped cold brew coffee over ice", 5.5, 7),
    ],
    "Mexican Specialties": [
        ("Beef Tacos", "three soft tacos, chipotle beef, pico de gallo and lime crema", 16, 20),
        ("Fish Tacos", "battered fish, cabbage slaw, salsa verde and lime", 17, 21),
        ("Chicken Burrito", "grilled chicken, rice, black beans, cheese and salsa", 16, 20),
        ("Pork Carnitas Burrito", "slow-cooked pork, rice, beans, guacamole and salsa", 17, 21),
        ("Beef Nachos", "corn chips, spiced beef, cheese, guacamole and sour cream", 17, 22),
        ("Bean Nachos", "corn chips, refried beans, jalapenos, cheese and salsa", 15, 19),
        ("Chicken Quesadilla", "flour tortilla, chicken, cheese, peppers and sour cream", 15, 19),
        ("Cheese Quesadilla", "flour tortilla, three cheeses and pico de gallo", 12, 15),
        ("Chicken Enchiladas", "corn tortillas, chicken, red sauce and melted cheese", 19, 24),
        ("Beef Fajitas", "sizzling beef strips, peppers and onion with tortillas", 24, 30),
        ("Chicken Fajitas", "sizzling chicken strips, peppers and onion with tortillas", 22, 27),
        ("Guacamole and Chips", "smashed avocado, lime, coriander and corn chips", 11, 14),
        ("Elote", "grilled corn, chilli mayo, cotija and lime", 8, 11),
        ("Chimichanga", "fried burrito with beef, beans and cheese, salsa roja", 18, 22),
        ("Taco Salad", "crispy tortilla bowl, beef, lettuce, beans and cheese", 16, 20),
        ("Prawn Tacos", "garlic prawns, mango salsa and chipotle mayo", 19, 24),
        ("Birria Tacos", "braised beef tacos with cheese and a rich consomme for dipping",
         20, 25),
        ("Vegetarian Burrito Bowl", "rice, black beans, corn, avocado and pickled onion", 15, 19),
        ("Chilli Con Carne", "beef and bean chilli with rice and sour cream", 17, 21),
        ("Tostadas", "crisp tortillas, refried beans, chicken and cotija", 14, 18),
        ("Tamales", "steamed corn masa filled with pork and red chilli", 15, 19),
        ("Chicken Mole", "chicken thighs in a dark chocolate chilli mole with rice", 22, 27),
        ("Queso Dip", "melted cheese dip with chorizo and corn chips", 11, 14),
        ("Huevos Rancheros", "fried eggs, tortilla, beans and ranchero sauce", 15, 19),
        ("Pulled Jackfruit Tacos", "smoky jackfruit, slaw and avocado crema", 15, 19),
        ("Carne Asada Plate", "grilled marinated skirt steak, rice, beans and tortillas",
         27, 33),
    ],
    "Pasta & Risotto": [
        ("Spaghetti Bolognese", "spaghetti in a slow-cooked beef and tomato ragu, parmesan",
         19, 24),
        ("Fettuccine Carbonara", "fettuccine, pancetta, egg yolk, pecorino and black pepper",
         21, 26),
        ("Penne Arrabbiata", "penne in a spicy tomato, garlic and chilli sauce", 17, 21),
        ("Lasagne", "layers of pasta, beef ragu, bechamel and mozzarella", 22, 27),
        ("Mushroom Risotto", "arborio rice, mixed mushrooms, truffle oil and parmesan", 23, 28),
        ("Seafood Linguine", "linguine, prawns, mussels, calamari, garlic, white wine and chilli",
         32, 39),
        ("Pumpkin Risotto", "roast pumpkin, sage, pine nuts and parmesan", 21, 26),
        ("Gnocchi Sorrentina", "potato gnocchi baked in tomato with mozzarella and basil", 20, 25),
        ("Prawn and Chorizo Risotto", "prawns, chorizo, peas and saffron", 27, 33),
        ("Spaghetti Marinara", "spaghetti with mixed seafood in a tomato and garlic sauce", 29, 35),
        ("Pesto Pasta", "trofie with basil pesto, green beans and potato", 18, 22),
        ("Ravioli di Ricotta", "ricotta and spinach ravioli in burnt sage butter", 22, 27),
        ("Chicken Alfredo", "fettuccine, chicken, cream, garlic and parmesan", 21, 26),
        ("Lobster Ravioli", "lobster-filled ravioli in a bisque cream sauce", 36, 44),
        ("Spaghetti Aglio e Olio", "spaghetti, garlic, olive oil, chilli and parsley", 16, 20),
        ("Beef Cheek Pappardelle", "pappardelle with braised beef cheek ragu", 28, 34),
        ("Pasta Primavera", "penne with spring vegetables, lemon and olive oil", 18, 22),
        ("Duck Ragu Tagliatelle", "slow-cooked duck ragu, tagliatelle and pecorino", 30, 36),
        ("Cacio e Pepe", "tonnarelli, pecorino romano and toasted black pepper", 19, 23),
        ("Baked Ziti", "ziti, sausage ragu, ricotta and mozzarella baked golden", 21, 26),
        ("Crab Linguine", "blue swimmer crab, chilli, lemon and garlic", 33, 40),
        ("Truffle Risotto", "arborio, black truffle, mascarpone and parmesan", 34, 42),
        ("Pasta alla Vodka", "rigatoni in a creamy tomato vodka sauce with chilli", 20, 24),
        ("Vegetable Lasagne", "layers of pasta, roast vegetables, ricotta and napoli", 20, 25),
        ("Scallop Risotto", "seared scallops, pea puree, lemon and arborio rice", 35, 43),
        ("Chicken and Mushroom Penne", "penne, chicken, mushrooms and creamy white wine sauce",
         20, 25),
    ],
    "Pizzas": [
        ("Margherita Pizza", "tomato, fior di latte and fresh basil on a wood-fired base", 17, 21),
        ("Pepperoni Pizza", "tomato, mozzarella and spicy pepperoni", 19, 23),
        ("Hawaiian Pizza", "tomato, mozzarella, leg ham and pineapple", 18, 22),
        ("Meat Lovers Pizza", "barbecue base, pepperoni, ham, bacon, sausage and mozzarella",
         22, 27),
        ("Supreme Pizza", "tomato, mozzarella, pepperoni, mushrooms, capsicum, onion and olives",
         21, 26),
        ("Vegetarian Pizza", "tomato, mozzarella, roast capsicum, mushroom, olives and spinach",
         19, 23),
        ("BBQ Chicken Pizza", "barbecue base, chicken, red onion, bacon and mozzarella", 21, 25),
        ("Prosciutto Pizza", "tomato, mozzarella, prosciutto, rocket and shaved parmesan",
         23, 28),
        ("Garlic Prawn Pizza", "garlic base, prawns, chilli, mozzarella and parsley", 25, 30),
        ("Four Cheese Pizza", "mozzarella, gorgonzola, parmesan and ricotta with honey", 20, 25),
        ("Diavola Pizza", "tomato, mozzarella, hot salami, chilli and olives", 20, 24),
        ("Capricciosa Pizza", "tomato, mozzarella, ham, mushrooms, artichokes and olives",
         20, 25),
        ("Mushroom Truffle Pizza", "white base, wild mushrooms, truffle oil and thyme", 23, 28),
        ("Lamb Pizza", "tomato, spiced lamb, feta, red onion and tzatziki", 22, 27),
        ("Marinara Pizza", "tomato, garlic, oregano and seafood mix", 24, 29),
        ("Pumpkin and Feta Pizza", "roast pumpkin, feta, spinach and pine nuts", 19, 23),
        ("Nduja Pizza", "tomato, spicy nduja, mozzarella and hot honey", 22, 26),
        ("Chicken Pesto Pizza", "pesto base, chicken, semi-dried tomato and mozzarella", 21, 25),
        ("Potato and Rosemary Pizza", "white base, thin potato, rosemary and sea salt", 18, 22),
        ("Smoked Salmon Pizza", "creme fraiche base, smoked salmon, capers and dill", 25, 30),
        ("Calzone", "folded pizza with ham, ricotta, mozzarella and tomato", 21, 25),
        ("Mexicana Pizza", "tomato, spicy beef, jalapenos, capsicum and onion", 20, 24),
        ("Carbonara Pizza", "cream base, pancetta, egg, parmesan and black pepper", 21, 26),
        ("Vegan Pizza", "tomato, vegan cheese, roast vegetables and basil", 19, 23),
        ("Sausage and Broccolini Pizza", "white base, fennel sausage, broccolini and chilli",
         22, 26),
        ("Kids Cheese Pizza", "tomato and mozzarella on a small base", 11, 13),
    ],
    "Salads & Healthy Options": [
        ("Caesar Salad", "cos lettuce, croutons, bacon, parmesan, egg and Caesar dressing",
         16, 20),
        ("Greek Salad", "tomato, cucumber, red onion, olives, feta and oregano", 15, 19),
        ("Quinoa Bowl", "quinoa, roast vegetables, kale, avocado and tahini", 17, 21),
        ("Poke Bowl", "raw salmon, sushi rice, edamame, avocado, seaweed and ponzu", 20, 25),
        ("Chicken Caesar Wrap", "grilled chicken, cos, parmesan and Caesar dressing", 14, 17),
        ("Nicoise Salad", "seared tuna, green beans, potato, egg and olives", 22, 27),
        ("Roast Pumpkin Salad", "roast pumpkin, rocket, feta, pepitas and balsamic", 16, 20),
        ("Thai Beef Salad", "seared beef, glass noodles, herbs, chilli and lime dressing",
         20, 25),
        ("Buddha Bowl", "brown rice, chickpeas, sweet potato, spinach and miso dressing",
         17, 21),
        ("Grilled Salmon Salad", "grilled salmon, mixed leaves, avocado and lemon dressing",
         24, 29),
        ("Caprese Salad", "buffalo mozzarella, heirloom tomato, basil and olive oil", 16, 20),
        ("Waldorf Salad", "apple, celery, walnuts, grapes and light mayo", 15, 18),
        ("Cobb Salad", "chicken, bacon, egg, avocado, blue cheese and tomato", 19, 23),
        ("Falafel Salad", "falafel, tabouli, hummus, cucumber and tahini", 16, 20),
        ("Tofu Stir-Fry", "tofu, broccoli, snow peas and bok choy in ginger soy", 17, 21),
        ("Chicken Superfood Salad", "grilled chicken, quinoa, kale, beetroot and seeds", 19, 23),
        ("Soba Noodle Salad", "buckwheat noodles, edamame, carrot and sesame dressing", 16, 20),
        ("Lentil Soup", "red lentils, cumin, tomato and crusty bread", 12, 15),
        ("Minestrone", "vegetable and bean soup with pasta and parmesan", 12, 15),
        ("Smashed Avocado", "avocado, feta, cherry tomato and dukkah on sourdough", 16, 20),
        ("Chicken Broth Bowl", "clear chicken broth, vegetables, rice noodles and herbs",
         14, 18),
        ("Grilled Chicken Plate", "grilled chicken breast, steamed greens and brown rice",
         19, 23),
        ("Barramundi Salad", "grilled barramundi, fennel, orange and leaves", 26, 31),
        ("Beetroot and Goat Cheese Salad", "roast beetroot, goat cheese, walnuts and leaves",
         16, 20),
        ("Vegan Power Bowl", "tempeh, brown rice, greens, avocado and peanut dressing", 18, 22),
        ("Fruit Salad", "seasonal fruit with yoghurt and passionfruit", 10, 13),
    ],
}

_STYLES = ("House", "Classic", "Chef's", "Homestyle", "Signature", "Rustic", "Traditional",
           "Deluxe", "Fresh", "Golden")
_TEMPLATES = (
    "{style_l} {dish_l} made with {ingredients}.",
    "Our {style_l} {dish_l}: {ingredients}. {extra}",
    "{ingredients_c}. A {style_l} take on the {dish_l}, {extra_l}",
    "{dish} with {ingredients}, {extra_l}",
    "Freshly prepared {dish_l} - {ingredients}. {extra}",
)
_EXTRAS: dict[str, tuple[str, ...]] = {
    "Appetizers & Sides": ("Great for sharing.", "Perfect to start the meal.",
                           "A side that goes with everything."),
    "Aussie Pub Classics": ("A pub favourite.", "Hearty and generous.",
                            "Just like your local pub makes it."),
    "Burgers & Sandwiches": ("Served with a side of chips.", "Stacked high and messy.",
                             "Toasted to order."),
    "Drinks & Desserts": ("Sweet and satisfying.", "Made fresh every morning.",
                          "The perfect pick-me-up."),
    "Mexican Specialties": ("Full of bold Mexican flavour.", "Spicy and vibrant.",
                            "Made with house salsa."),
    "Pasta & Risotto": ("Made with fresh Italian pasta.", "Creamy and comforting.",
                        "Cooked to order, al dente."),
    "Pizzas": ("Wood-fired and hand-stretched.", "Baked in our stone oven.",
               "Twelve inches of crispy base."),
    "Salads & Healthy Options": ("Light, fresh and nourishing.", "Packed with greens.",
                                 "A healthy choice that still satisfies."),
}


def make_catalog(seed: int) -> list[Product]:
    """200 products (25 per category), a pure function of ``seed``."""
    rng = random.Random(f"catalog:{seed}")
    products: list[Product] = []
    for category in CATEGORIES:
        dishes = rng.sample(_DISHES[category], PER_CATEGORY)
        for dish, ingredients, low, high in dishes:
            style = rng.choice(_STYLES)
            extra = rng.choice(_EXTRAS[category])
            text = rng.choice(_TEMPLATES).format(
                style_l=style, dish=dish, dish_l=dish.lower(), ingredients=ingredients,
                ingredients_c=ingredients[0].upper() + ingredients[1:], extra=extra,
                extra_l=extra[0].lower() + extra[1:],
            )
            text = text[0].upper() + text[1:]
            # Prices end in .00 or .50 or .90, like a menu.
            price = round(rng.uniform(low, high) * 2) / 2
            if rng.random() < 0.3:
                price = max(float(low), price - 0.1)
            name = dish if rng.random() < 0.6 else f"{style} {dish}"
            products.append(Product(f"p{len(products):03d}", name, text, round(price, 2),
                                    category))
    return products


def catalog_csv(products: list[Product]) -> str:
    """The catalog as CSV text (stable quoting and line endings for byte equality)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CATALOG_FIELDS)
    for p in products:
        writer.writerow([p.product_id, p.name, p.description, f"{p.price:.2f}", p.category])
    return buf.getvalue()


def write_catalog(products: list[Product], path: Path) -> None:
    path.write_text(catalog_csv(products), encoding="utf-8")
